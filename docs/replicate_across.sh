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

# The text-only method each cross-family pair's validation operands pick on seeds 0-4 (docs/GRAFT_ACROSS_MODELS.md,
# "Which method each pair's validation split picks"): its headline row gets seeds 5-9 too.
best_llama_neox=${BEST_LLAMA_NEOX:-procrustes_init}
best_neox_llama=${BEST_NEOX_LLAMA:-procrustes_init}
# ... and the method the validation operands pick among all six where it is not a text-only one (GPTNeoX -> Llama)
best_any_neox_llama=${BEST_ANY_NEOX_LLAMA:-procrustes_distill}

part_headline() {  # the headline cells to 10 seeds
  run across/llama-to-gpt_neox-seeds experiment=across_tiny donor=tiny-llama host=tiny-host \
    "+variant=$best_llama_neox" seed=5,6,7,8,9
  run across/gpt_neox-to-llama-seeds experiment=across_tiny donor=tiny-vanilla host=tiny-llama \
    "+variant=$best_neox_llama" seed=5,6,7,8,9
  run across/gpt_neox-to-llama-seeds-any experiment=across_tiny donor=tiny-vanilla host=tiny-llama \
    "+variant=$best_any_neox_llama" seed=5,6,7,8,9
}

part_init() {  # the closed forms and the own method in the independent-init cells (the rest: replicate_beyond.sh)
  run across/indep experiment=across_tiny host=tiny-host-indep,tiny-host-m \
    +variant=procrustes,lstsq,procrustes_distill seed=0,1
  run across/indep-more experiment=across_tiny host=tiny-host-indep,tiny-host-m +variant=procrustes_distill \
    seed=2,3,4  # the own method, which the status quotes, to 5 seeds
  run across/indep-seeds experiment=across_tiny host=tiny-host-indep,tiny-host-m +variant=procrustes_distill \
    seed=5,6,7,8,9  # ... and to 10
}

part_knowledge() {  # held-out facts across families: GPTNeoX -> Llama (where the skill crosses), task-data methods
  run across_knowledge/gpt_neox-to-llama experiment=beyond_knowledge_tiny host=tiny-llama \
    +variant=distill,procrustes_distill seed=0,1,2
}

runs_of() {  # runs_of <sweep folder> <seed> <method ...>: those finished jobs, as a Hydra list
  python - "$@" <<'PY'
import sys
from pathlib import Path
from grafting.reporting.aggregate import finished_jobs, job_overrides
sweep, seed, methods = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
found = {job_overrides(d).get("variant", "paper"): d for d, r in finished_jobs(sweep) if r["config"]["seed"] == seed}
print("[" + ",".join(str(found[m]) for m in methods if m in found) + "]")
PY
}

part_diagnose() {  # where the skill is lost: each half of the graft on its own (stage=diagnose), seeds 0-2
  local pair seed
  for pair in llama-to-gpt_neox gpt_neox-to-llama; do
    for seed in 0 1 2; do
      [ -f "$out/across_diagnose/$pair/$seed/diagnose.json" ] && continue
      OMP_NUM_THREADS=1 python train.py stage=diagnose hydra.run.dir="$out/across_diagnose/$pair/$seed" \
        "stage.run_dir=$(runs_of "$out/across/$pair" "$seed" paper procrustes_init distill procrustes_distill)"
    done
  done
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(families headline init knowledge diagnose)
for part in "${parts[@]}"; do "part_$part"; done
python docs/make_across.py --runs "$out"
