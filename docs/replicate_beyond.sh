#!/usr/bin/env bash
# Every run behind docs/BEYOND_THE_PAPER.md, offline on the models shipped with the package (nothing is
# pretrained), then its tables:
#   bash docs/replicate_beyond.sh [part ...]    # default: every part, in this order
# Jobs of one seed share one fine-tune (finetune.cache), the scores of Tuned / Vanilla / Host (evaluation.cache)
# and the paper's alignment (align.cache). A finished job is skipped; an interrupted one resumes. The jobs of a
# multirun run side by side, one single-thread job per core (docs/sweep.sh; JOBS=N to choose).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
out=${REPLICATION_DIR:-outputs/replication}

run() {  # run <sweep folder under $out> <overrides...>
  local dir=$1; shift
  bash docs/sweep.sh "$@" "hydra.sweep.dir=$out/$dir" resume=true
}

# The method the validation split picks in the shared-init, same-width cell (docs/BEYOND_THE_PAPER.md, "Which
# method each cell's validation split picks"); the 10-seed rows and the 2x host use it.
best=${BEST:-distill}
best_knowledge=${BEST_KNOWLEDGE:-distill_long}

# The seed counts are the runs behind the page (what one session's 2-core CPU fitted); add seeds with seed=...
part_skill() {
  run skill_2x2/tiny-host experiment=skill_2x2_tiny host=tiny-host                        # 4 methods x 5 seeds
  run skill/seeds experiment=skill_tiny "+variant=$best" host=tiny-host seed=5,6,7,8,9     # the pick: 10 seeds
  run skill/indep experiment=skill_tiny "+variant=$best" host=tiny-host-indep seed=0,1,2,3,4,5,6,7,8,9
  run skill_2x2/tiny-host-indep experiment=skill_2x2_tiny host=tiny-host-indep +variant=paper,procrustes_init,host_lora \
    seed=0,1,2,3,4
  run skill_2x2/tiny-host-m-shared experiment=skill_2x2_tiny host=tiny-host-m-shared seed=0,1,2,3,4  # 4 methods x 5
  run skill_2x2/tiny-host-m experiment=skill_2x2_tiny host=tiny-host-m seed=0,1,2,3,4                # 4 methods x 5
  # The wider cells' rows the status quotes as shown, to 10 seeds: the pick in both, procrustes_init in the shared one
  run skill_2x2/tiny-host-m-shared-more experiment=skill_2x2_tiny host=tiny-host-m-shared \
    "+variant=$best,procrustes_init" seed=5,6,7,8,9
  run skill_2x2/tiny-host-m-more experiment=skill_2x2_tiny host=tiny-host-m "+variant=$best" seed=5,6,7,8,9
}

part_skill_l() {  # the 2x host (tiny-host-l ships), the best method, 10 seeds
  run skill_l/main experiment=skill_2x2_tiny host=tiny-host-l "+variant=$best" seed=0,1,2,3,4
  run skill_l/more experiment=skill_2x2_tiny host=tiny-host-l "+variant=$best" seed=5,6,7,8,9
}

part_knowledge() {  # 5 methods x 2 seeds; the validation keys' pick to 10 seeds; the permuted table, 2 seeds
  run beyond_knowledge/main experiment=beyond_knowledge_tiny seed=0,1
  run beyond_knowledge/seeds experiment=beyond_knowledge_tiny "+variant=$best_knowledge" seed=2,3,4,5,6,7,8,9
  run knowledge_permuted/main experiment=beyond_knowledge_tiny "+variant=$best_knowledge" task.table_seed=1 \
    seed=0,1
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(skill skill_l knowledge)
for part in "${parts[@]}"; do "part_$part"; done
python docs/make_beyond.py --runs "$out"
