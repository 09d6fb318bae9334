#!/usr/bin/env bash
# Every run behind docs/GRAFT_ACROSS_MODELS.md, offline on the models shipped with the package (nothing is
# pretrained), then its tables:
#   bash docs/replicate_across.sh [part ...]    # default: every part, in this order
# Jobs of one seed share one fine-tune (finetune.cache), the scores of Tuned / Vanilla / Host (evaluation.cache)
# and the paper's alignment (align.cache). A finished job is skipped; an interrupted one resumes. The jobs of a
# multirun run side by side, one single-thread job per core (docs/sweep.sh; JOBS=N to choose).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
out=${REPLICATION_DIR:-outputs/replication}
seeds=${SEEDS:-0,1,2,3,4}

run() {  # run <sweep folder under $out> <overrides...>
  local dir=$1; shift
  bash docs/sweep.sh "$@" "hydra.sweep.dir=$out/$dir" resume=true
}

part_families() {  # the two cross-family pairs: 7 methods x 5 seeds each
  run across/llama-to-gpt_neox experiment=across_tiny donor=tiny-llama host=tiny-host "seed=$seeds"
  run across/gpt_neox-to-llama experiment=across_tiny donor=tiny-vanilla host=tiny-llama "seed=$seeds"
}

part_init() {  # the closed forms and the own method in the independent-init cells (the rest: replicate_beyond.sh)
  run across/indep experiment=across_tiny host=tiny-host-indep,tiny-host-m \
    +variant=procrustes,lstsq,procrustes_distill seed=0,1,2
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(families init)
for part in "${parts[@]}"; do "part_$part"; done
python docs/make_across.py --runs "$out"
