#!/usr/bin/env bash
# One multirun that uses the whole machine: JOBS jobs side by side, each on CORES / JOBS threads.
#   bash docs/sweep.sh experiment=paper_protocol_tiny [more train.py arguments]
#   JOBS=1 bash docs/sweep.sh ...            # one job at a time, every core to it
# JOBS defaults to the number of cores this process may use. Small models use threads poorly (a tiny
# block's ops are too short to split), so one single-thread job per core finishes the most jobs per hour
# (benchmarks/RESULTS.md, case k). The jobs run in joblib worker processes (hydra/launcher=local_parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(python -c "import os; print(len(os.sched_getaffinity(0)))")
jobs=${JOBS:-$cores}
threads=$(( cores / jobs ))
[ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
if [ "$jobs" -gt 1 ]; then
  exec python train.py -m hydra/launcher=local_parallel "hydra.launcher.n_jobs=$jobs" "$@"
fi
exec python train.py -m "$@"
