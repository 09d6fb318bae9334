#!/usr/bin/env bash
# The runs behind docs/skillpacks/results.md's "Routing by content" (issue 30), then its tables:
#   bash docs/skillpacks/replicate_content.sh [seed ...]     # default: seeds 0 1 2
# One single-thread job per seed, JOBS at a time (default: the cores); each from the shipped models, nothing
# pretrained. A finished seed is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
out=${REPLICATION_DIR:-outputs}/skillpack_content
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
n_jobs=${JOBS:-$(python -c "import os; print(len(os.sched_getaffinity(0)))")}
running=0
for seed in "${seeds[@]}"; do
  [ -f "$out/s$seed/0/results.json" ] && continue
  python train.py -m experiment=skillpack_content "seed=$seed" "hydra.sweep.dir=$out/s$seed" &
  running=$((running + 1))
  if [ "$running" -ge "$n_jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
python docs/skillpacks/make_content.py "$out"
