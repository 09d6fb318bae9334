#!/usr/bin/env bash
# Issue 15's sweep: 3 seeds of experiment=skillpack_budgets, then the tables of docs/skillpacks/results.md.
# One job is ~2 h of one CPU core at full size (see results.md); on a GPU set evaluation.device=cuda
# (the default "auto" already picks it). Jobs run one after another unless a parallel launcher is given,
# e.g. `bash docs/skillpacks/sweep.sh hydra/launcher=local_parallel`.
set -euo pipefail
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python train.py -m experiment=skillpack_budgets "$@"
latest=$(ls -dt outputs/skillpack_budgets/multiruns/*/ | head -1)
python docs/skillpacks/make_results.py "$latest"
