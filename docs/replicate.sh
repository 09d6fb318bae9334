#!/usr/bin/env bash
# Every run behind docs/RESULTS.md, offline on the shipped tiny models, then its tables (knowledge on held-out keys
# is in docs/BEYOND_THE_PAPER.md: docs/replicate_beyond.sh; the pair-seed sweep, which pretrains two more pairs,
# runs with `bash docs/replicate.sh pair_seed`):
#   bash docs/replicate.sh [experiment ...]     # default: all of them, in this order
# Each experiment is `python train.py -m experiment=<name>_tiny` (5 seeds). The jobs of one seed share
# one fine-tune (finetune.cache) and the scores of Tuned / Vanilla / Host (evaluation.cache).
# A finished job is skipped; an interrupted one resumes from its checkpoints. The jobs of a multirun run
# side by side, one single-thread job per core (docs/sweep.sh; JOBS=N to choose).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
out=${REPLICATION_DIR:-outputs/replication}
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(paper_protocol loss_ablation strategy align_data dest_layer pair_init
                                             protocol_variants host_size)
for name in "${experiments[@]}"; do
  bash docs/sweep.sh "experiment=${name}_tiny" "hydra.sweep.dir=$out/$name" resume=true
done
python docs/make_results.py --runs "$out"
