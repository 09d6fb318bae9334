"""The tables of docs/GRAFT_ACROSS_MODELS.md, from the cross-model multiruns.

    bash docs/replicate_beyond.sh skill                # the paper / procrustes_init / distill / LoRA cells
    bash docs/replicate_across.sh                      # the other families, the closed forms, the own method
    python docs/make_across.py [--runs outputs/replication]

One table per pair of models that share nothing but the tokenizer and the pretraining data: each alignment
method's graft beside its two controls (the same method with the vanilla block; the tuned block between untrained
identity translators) and the equal-parameter host LoRA, on the input-dependent skill of experiment=skill_tiny
(held-out operands). Cells are means over seeds with the project's one interval (seeds and test items;
grafting.metrics.stats).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_beyond import by, cell_table, choices, host, knowledge_tables, summary_table, variant  # noqa: E402
from make_results import DOCS, Job, bar_figure, interval, load_jobs, main  # noqa: E402

from grafting.metrics.stats import INTERVAL_METHOD  # noqa: E402

# (donor, host) -> what the pair shares and does not
PAIRS = {("tiny-vanilla", "tiny-host-indep"): "GPTNeoX → GPTNeoX, independent init, same width",
         ("tiny-vanilla", "tiny-host-m"): "GPTNeoX → GPTNeoX, independent init, 1.5× wider",
         ("tiny-vanilla", "tiny-host-l"): "GPTNeoX → GPTNeoX, independent init, 2× wider, 1.5× deeper",
         ("tiny-llama", "tiny-host"): "Llama → GPTNeoX",
         ("tiny-vanilla", "tiny-llama"): "GPTNeoX → Llama"}
TEXT_ONLY = {"paper": "the paper's alignment: KL through the logit lens, from the identity",
             "procrustes_init": "the paper's KL, from the closed-form best scaled rotation",
             "procrustes": "Theseus-style closed-form transport: the best scaled rotation, no gradient step",
             "lstsq": "stitching-style: the least-squares linear map on paired activations, no gradient step"}
TASK_DATA = {"distill": "the paper's, then distillation from the tuned donor (training operands only)",
             "procrustes_distill": "own: the rotation start, the paper's KL, then the distillation"}
METHODS = {**TEXT_ONLY, **TASK_DATA,
           "host_lora": "control: LoRA on the host's block, as many parameters as the translators"}
# the runs of docs/BEYOND_THE_PAPER.md that are cells of a pair here (experiment=skill_2x2_tiny, its seeds, the 2x host)
SOURCES = ("across", "skill_2x2", "skill", "skill_l")
# the stored facts of BEYOND's knowledge table, grafted across a pair (docs/replicate_across.sh knowledge)
KNOWLEDGE = "across_knowledge"


def pair(job: Job) -> tuple[str, str]:
    return str(job.results["config"]["donor"]["name"]), host(job)


def pair_key(job: Job) -> str:
    return " → ".join(pair(job))


def labels() -> dict[str, str]:
    return {" → ".join(p): f"{name} (`{p[0]}` → `{p[1]}`)" for p, name in PAIRS.items()}


def across_jobs(runs: Path) -> list[Job]:
    """The jobs of the pairs above, from the cross-model runs and the BEYOND runs that are cells here."""
    return [j for j in load_jobs(runs) if j.experiment in SOURCES and pair(j) in PAIRS]


def knowledge_jobs(runs: Path) -> list[Job]:
    """Held-out facts across a pair (experiment=beyond_knowledge_tiny with another family's host)."""
    return [j for j in load_jobs(runs) if j.experiment == KNOWLEDGE and pair(j) in PAIRS]


def figure(jobs: list[Job], path: Path = DOCS / "figures" / "across_models.png") -> Path:
    """Held-out accuracy per pair: each method's model, the best-known control and the tuned donor."""
    groups = {}
    for key, label in labels().items():
        cell = [j for j in jobs if pair_key(j) == key]
        if not cell:
            continue
        runs = by(cell, variant)
        bars = {m: interval(runs[m], "HostLoRA" if m == "host_lora" else "Grafted", "fact") for m in METHODS if m in runs}
        bars["tuned block, identity translators"] = interval(cell, "IdentityGraft", "fact")
        bars["Tuned donor"] = interval(list({j.seed: j for j in cell}.values()), "Tuned", "fact")
        groups[label.split(" (")[0]] = bars
    return bar_figure(path, groups, "held-out accuracy (fact)", "The input-dependent skill across models")


HALVES = ("Tuned", "Grafted", "VanillaGraft", "input_half", "output_half")


def diagnostics(runs: Path) -> list[str]:
    """Each half of the graft on its own (stage=diagnose under ``runs/across_diagnose``): the teacher-forced
    fact of the tuned donor, the graft, its vanilla-block control, the host up to the graft then Pre-T and the
    tuned donor (``input_half``), and the tuned donor through its block then Post-T and the host (``output_half``),
    over the seeds diagnosed, with the project's interval (seeds and the diagnosed prompts)."""
    import json

    from grafting.metrics.stats import format_interval, score_interval
    from grafting.reporting.aggregate import job_overrides

    groups: dict[tuple[str, str], list[dict]] = {}
    for path in sorted((runs / "across_diagnose").rglob("diagnose.json")):
        for run in json.loads(path.read_text())["runs"]:
            job = Path(run["run_dir"])
            graft = Job("", "", 0, json.loads((job / "results.json").read_text()))  # the diagnosed run
            key = (pair_key(graft), job_overrides(job).get("variant", "paper"))
            facts = run["facts_teacher_forced"]
            groups.setdefault(key, []).append({m: {"fact": facts[m], "n": facts["n"]} for m in HALVES})
    if not groups:
        return []
    names = labels()
    lines = ["| pair | method | seeds | " + " | ".join(HALVES) + " |", "|---|---|---|" + "---|" * len(HALVES)]
    for (key, method) in [(k, m) for k in names for m in METHODS if (k, m) in groups]:
        seeds = groups[(key, method)]
        cells = [format_interval(score_interval([s[m] for s in seeds], "fact")) for m in HALVES]
        lines.append(f"| {names[key].split(' (')[0]} | `{method}` | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def build(runs: Path) -> str:
    jobs = across_jobs(runs)
    if not jobs:
        raise SystemExit(f"no cross-model runs under {runs}: run `bash docs/replicate_across.sh` first")
    names = labels()
    text_only = {m: d for m, d in METHODS.items() if m in TEXT_ONLY}
    parts = [f"_Generated by `python docs/make_across.py --runs {runs}` from {len(jobs)} jobs. "
             f"Intervals: {INTERVAL_METHOD}._", "",
             f"![Held-out accuracy per pair](figures/{figure(jobs).name})", "",
             "### Held-out accuracy (fact) per method and pair", "",
             *summary_table(jobs, METHODS, pair_key, names), "",
             "### Which method each pair's validation split picks", "",
             "Among the text-only methods (the headline: no task data on the host's side):", "",
             *choices(jobs, text_only, pair_key, names), "", "Among every method:", "",
             *choices(jobs, METHODS, pair_key, names), ""]
    for key, label in names.items():
        cell = [j for j in jobs if pair_key(j) == key]
        if cell:
            parts += [f"### {label}", "", *cell_table(cell, METHODS), ""]
    knowledge = knowledge_jobs(runs)
    for key, label in names.items():
        cell = [j for j in knowledge if pair_key(j) == key]
        if cell:
            parts += [f"### Held-out facts: {label}", "",
                      "The tuned block stores all 128 facts; the translators see only the 64 training keys; the "
                      "48 test keys are scored (BEYOND_THE_PAPER.md, \"Knowledge\").", "",
                      *knowledge_tables(cell, methods=METHODS, cell_of=pair_key, labels=names)]
    halves = diagnostics(runs)
    if halves:
        parts += ["### Where the skill is lost: each half of the graft on its own", "",
                  "Teacher-forced fact (the prompt and the answer's format given, the digit scored) on the first "
                  "64 test prompts (`python train.py stage=diagnose`). `input_half`: the host up to the graft, "
                  "Pre-T, then the tuned donor from its block on. `output_half`: the tuned donor through its "
                  "block, Post-T, then the host's later blocks.", "", *halves, ""]
    return "\n".join(parts)


if __name__ == "__main__":
    main("GRAFT_ACROSS_MODELS.md", build, __doc__)
