#!/usr/bin/env bash
# Issue 15's sweep: 3 seeds of experiment=skillpack_budgets, then the tables of docs/skillpacks/results.md.
# One job took 94-128 min of wall time on a 2-core CPU shared by 3-4 jobs (results.md); on a GPU the default
# evaluation.device=auto picks it. Jobs run one after another unless a parallel launcher is given,
# e.g. `bash docs/skillpacks/sweep.sh hydra/launcher=local_parallel`.
set -euo pipefail
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python train.py -m experiment=skillpack_budgets "$@"
latest=$(ls -dt outputs/skillpack_budgets/multiruns/*/ | head -1)
python docs/skillpacks/make_results.py "$latest"
