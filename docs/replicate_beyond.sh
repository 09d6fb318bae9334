#!/usr/bin/env bash
# Every run behind docs/BEYOND_THE_PAPER.md, offline on the models shipped with the package (nothing is
# pretrained), then its tables:
#   bash docs/replicate_beyond.sh [part ...]    # default: every part, in this order
# Jobs of one seed share one fine-tune (finetune.cache), the scores of Tuned / Vanilla / Host (evaluation.cache)
# and the paper's alignment (align.cache). A finished job is skipped; an interrupted one resumes.
# JOBS=2 runs two jobs at a time with one thread each (hydra/launcher=local_parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=${REPLICATION_DIR:-outputs/replication}
launcher=()
[ "${JOBS:-1}" -gt 1 ] && launcher=(hydra/launcher=local_parallel "hydra.launcher.n_jobs=${JOBS}")

run() {  # run <sweep folder under $out> <overrides...>
  local dir=$1; shift
  python train.py -m "$@" "${launcher[@]}" "hydra.sweep.dir=$out/$dir" resume=true
}

# The method the validation split picks in the shared-init, same-width cell (docs/BEYOND_THE_PAPER.md, "Which
# method each cell's validation split picks"); the 10-seed rows and the 2x host use it.
best=${BEST:-procrustes_init}
best_knowledge=${BEST_KNOWLEDGE:-distill_long}

part_skill() {
  run skill_2x2/main experiment=skill_2x2_tiny                                       # 4 hosts x 4 methods x 5 seeds
  run skill_2x2/distill_long experiment=skill_2x2_tiny host=tiny-host +variant=distill_long  # distil steps, on validation
  run skill/seeds5-9 experiment=skill_tiny "+variant=$best" host=tiny-host,tiny-host-m seed=5,6,7,8,9
  run skill_l/main experiment=skill_2x2_tiny host=tiny-host-l "+variant=$best"        # the 2x host, the chosen method
}

part_knowledge() {
  run beyond_knowledge/main experiment=beyond_knowledge_tiny                         # 5 methods x 5 seeds
  run beyond_knowledge/seeds5-9 experiment=beyond_knowledge_tiny "+variant=$best_knowledge" seed=5,6,7,8,9
  run knowledge_permuted/main experiment=beyond_knowledge_tiny "+variant=$best_knowledge" task.table_seed=1 \
    seed=0,1,2,3,4,5,6,7,8,9
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(skill knowledge)
for part in "${parts[@]}"; do "part_$part"; done
python docs/make_beyond.py --runs "$out"
