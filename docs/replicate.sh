#!/usr/bin/env bash
# The micro-replication behind docs/RESULTS.md: the five ablations of the grafting paper on the tiny
# pretrained pair, 3 seeds each, offline. Each sweep fine-tunes the donor once per seed (finetune.cache)
# and reuses that block in every job. Then the tables and figures are built from each multirun.
#   bash docs/replicate.sh [experiment ...]     # default: all five
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
out=${REPLICATION_DIR:-outputs/replication}
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(loss_ablation strategy align_data dest_layer host_size)
for name in "${experiments[@]}"; do
  # resume=true: a re-run continues unfinished jobs from their checkpoints and reads back finished steps.
  [ -f "$out/$name/aggregate.md" ] || python train.py -m "experiment=${name}_tiny" "hydra.sweep.dir=$out/$name" resume=true
  python evaluate.py "aggregate=$out/$name"
done
