"""The tables of docs/BEYOND_THE_PAPER.md, from the beyond-the-paper multiruns.

    bash docs/replicate_beyond.sh                    # the runs (outputs/replication/<experiment>/...)
    python docs/make_beyond.py [--runs outputs/replication]

- **The input-dependent skill** (experiment=skill_2x2_tiny, its 10-seed extension and the 2x host): each method
  in each cell of initialisation (shared / independent) x width (same / 1.5x), held-out accuracy beside both
  controls (the same method with the vanilla block; the tuned block between untrained identity translators) and
  the equal-parameter host LoRA.
- **Knowledge on held-out keys** (experiment=beyond_knowledge_tiny and the permuted-table control).
- **Choices on validation**: which method each cell's validation split picks.

Cells are means over seeds with the project's one interval (seeds and test items; grafting.metrics.stats).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_results import (  # noqa: E402
    DOCS,
    Job,
    bar_figure,
    constant_fact,
    interval,
    load_jobs,
    main,
    share_header,
    share_row,
)

from grafting.metrics.stats import INTERVAL_METHOD, format_interval, separated, share_interval  # noqa: E402

METRICS = ["val_fact", "fact", "f_H", "kl_host", "MLM"]
# host -> (initialisation, width) of the 2 x 2, and the 2x host
CELLS = {"tiny-host": ("shared", "same"), "tiny-host-indep": ("independent", "same"),
         "tiny-host-m-shared": ("shared", "1.5x"), "tiny-host-m": ("independent", "1.5x"),
         "tiny-host-l": ("independent", "2x (1.5x deeper)")}
METHODS = {"paper": "the paper's alignment (KL from the identity)",
           "procrustes_init": "the paper's KL from the closed-form rotation",
           "distill": "the paper's, then 100 steps of distillation (training items only)",
           "distill_long": "the paper's, then 400 steps of distillation (training items only)",
           "host_lora": "control: LoRA on the host's block, as many parameters as the translators"}
SKILL = ("skill_2x2", "skill", "skill_l")
KNOWLEDGE = ("beyond_knowledge", "knowledge_permuted")
CONTROLS = ("VanillaGraft", "IdentityGraft")


def variant(job: Job) -> str:
    # the setting holds the overrides with Hydra's "+" stripped (grafting.reporting.aggregate.job_overrides)
    return next((p.split("=", 1)[1] for p in job.setting.split() if p.startswith("variant=")), "paper")


def host(job: Job) -> str:
    return str(job.results["config"]["host"]["name"])


def model_of(method: str) -> str:
    """The model a method's row reports: its graft, or for the host LoRA control the LoRA."""
    return "HostLoRA" if method == "host_lora" else "Grafted"


def by(jobs: list[Job], key) -> dict[str, list[Job]]:
    out: dict[str, list[Job]] = {}
    for job in jobs:
        out.setdefault(key(job), []).append(job)
    return out


def ordered(groups: dict[str, list[Job]], order) -> dict[str, list[Job]]:
    return {k: groups[k] for k in [*order, *sorted(groups)] if k in groups}


def one_per_seed(jobs: list[Job]) -> list[Job]:
    """One job per seed (the references Tuned, Vanilla and Host are the same in every method of a seed)."""
    return list({job.seed: job for job in sorted(jobs, key=lambda j: j.seed)}.values())


def verdict(group: list[Job], model: str = "Grafted", metric: str = "fact") -> str:
    """``shown`` when ``model``'s interval lies above both controls'; else which control it fails to beat."""
    mine = interval(group, model, metric)
    controls = {c: interval(group, c, metric) for c in CONTROLS}
    if math.isnan(mine[0]) or any(math.isnan(c[0]) for c in controls.values()):
        return "n/a"
    unbeaten = [c for c, ci in controls.items() if not (separated(mine, ci) and mine[0] > ci[0])]
    return "shown" if not unbeaten else f"not shown (vs {', '.join(unbeaten)})"


def gain_share(group: list[Job], model: str = "Grafted") -> str:
    """``model``'s share of the tuned donor's held-out fact gain over the vanilla-block control."""
    fact = {m: [j.metric(m, "fact") for j in group] for m in (model, "VanillaGraft", "Tuned")}
    if any(math.isnan(v) for vs in fact.values() for v in vs):
        return "n/a"
    n = int(group[0].metric(model, "n"))
    return format_interval(share_interval(fact[model], fact["VanillaGraft"], fact["Tuned"], n))


def cell_table(jobs: list[Job], methods: dict[str, str] = METHODS) -> list[str]:
    """One host: each method's model beside its controls, then the references."""
    lines = ["| method | model | seeds | " + " | ".join(METRICS) + " | held-out fact above both controls | share "
             "of Tuned's gain over VanillaGraft |", "|---|---|---|" + "---|" * (len(METRICS) + 2)]
    for method, group in ordered(by(jobs, variant), methods).items():
        models = ["HostLoRA"] if method == "host_lora" else ["Grafted", *CONTROLS]
        for model in models:
            cells = [format_interval(interval(group, model, m)) for m in METRICS]
            extra = [verdict(group, model), gain_share(group, model)] if model in ("Grafted", "HostLoRA") else ["", ""]
            lines.append(f"| `{method}` | {model} | {len(group)} | " + " | ".join(cells + extra) + " |")
    refs = one_per_seed(jobs)
    for model in ("Tuned", "Vanilla", "Host"):
        # the host's KL to itself is 0 by definition, not a measurement with an interval
        cells = ["0 (itself)" if (model, m) == ("Host", "kl_host") else format_interval(interval(refs, model, m))
                 for m in METRICS]
        lines.append(f"| (references) | {model} | {len(refs)} | " + " | ".join(cells) + " | | |")
    return lines


def cell_labels() -> dict[str, str]:
    """The 2 x 2's cells (and the 2x host) by host, as the summary's columns name them."""
    return {h: f"{init} init, {width} (`{h}`)" for h, (init, width) in CELLS.items()}


def summary_table(jobs: list[Job], methods: dict[str, str] = METHODS, cell_of=host,
                  labels: dict[str, str] | None = None) -> list[str]:
    """Methods x cells: the held-out accuracy (fact) of each method's model, its vanilla-block control beside it.

    A cell is what ``cell_of(job)`` returns (the host by default); ``labels`` orders and names the cells.
    """
    labels = labels or cell_labels()
    hosts = [h for h in labels if any(cell_of(j) == h for j in jobs)]
    lines = ["| method | " + " | ".join(labels[h] for h in hosts) + " |", "|---|" + "---|" * len(hosts)]
    for method in [m for m in methods if any(variant(j) == m for j in jobs)]:
        cells = []
        for h in hosts:
            group = [j for j in jobs if cell_of(j) == h and variant(j) == method]
            if not group:
                cells.append("not run")
                continue
            mine = format_interval(interval(group, model_of(method), "fact"))
            control = "" if method == "host_lora" else \
                f" (vanilla block {format_interval(interval(group, 'VanillaGraft', 'fact'))})"
            cells.append(f"{mine}{control}, {len(group)} seeds")
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    refs = {h: one_per_seed([j for j in jobs if cell_of(j) == h]) for h in hosts}
    lines.append("| (Tuned donor) | " + " | ".join(format_interval(interval(refs[h], "Tuned", "fact")) for h in hosts)
                 + " |")
    return lines


def skill_figure(jobs: list[Job], path: Path = DOCS / "figures" / "beyond_skill_2x2.png") -> Path:
    """Held-out accuracy per cell: each method's model, its vanilla-block control and the tuned donor."""
    groups = {}
    for h in [h for h in CELLS if any(host(j) == h for j in jobs)]:
        cell = [j for j in jobs if host(j) == h]
        bars = {m: interval([j for j in cell if variant(j) == m], model_of(m), "fact") for m in METHODS}
        distill = [j for j in cell if variant(j) == "distill"]  # the best method's two controls
        bars["distill, vanilla block"] = interval(distill, "VanillaGraft", "fact")
        bars["tuned block, identity translators"] = interval(one_per_seed(cell), "IdentityGraft", "fact")
        bars["Tuned donor"] = interval(one_per_seed(cell), "Tuned", "fact")
        groups[f"{CELLS[h][0]}, {CELLS[h][1]}"] = bars
    return bar_figure(path, groups, "held-out accuracy (fact)", "The input-dependent skill: initialisation x width")


def choices(jobs: list[Job], methods: dict[str, str] = METHODS, cell_of=host,
            labels: dict[str, str] | None = None) -> list[str]:
    """Per cell, each grafting method's validation accuracy and the one the validation split picks.

    The methods are compared on the seeds they all ran (a method extended to more seeds is not compared
    on its extra seeds). Cells as in :func:`summary_table`.
    """
    labels = labels or {h: f"`{h}`" for h in CELLS}
    hosts = [h for h in labels if any(cell_of(j) == h for j in jobs)]
    grafts = [m for m in methods if m != "host_lora" and any(variant(j) == m for j in jobs)]
    lines = ["| cell | seeds | " + " | ".join(f"`{m}` val_fact" for m in grafts) + " | chosen on validation |",
             "|---|---|" + "---|" * (len(grafts) + 1)]
    for h in hosts:
        runs = {m: [j for j in jobs if cell_of(j) == h and variant(j) == m] for m in grafts}
        ran = [m for m in grafts if runs[m]]
        common = set.intersection(*({j.seed for j in runs[m]} for m in ran)) if ran else set()
        scores = {m: interval([j for j in runs[m] if j.seed in common], "Grafted", "val_fact") for m in grafts}
        means = {m: scores[m][0] for m in ran if not math.isnan(scores[m][0])}
        top = [m for m in means if means[m] == max(means.values())]
        best = " ".join(f"`{m}`" for m in top) + (" (a tie)" if len(top) > 1 else "") if top else "n/a"
        if len(ran) == 1:  # nothing to choose between: say so rather than name a "pick"
            best = f"no choice (only `{ran[0]}` ran)"
        lines.append(f"| {labels[h]} | {len(common)} | " + " | ".join(format_interval(scores[m]) for m in grafts)
                     + f" | {best} |")
    return lines


def knowledge_tables(main_jobs: list[Job], permuted: list[Job] | None = None, methods: dict[str, str] = METHODS,
                     cell_of=host, labels: dict[str, str] | None = None) -> list[str]:
    """Each method on the held-out keys, its fact share, the validation keys' pick per cell (as :func:`choices`),
    and (if run) the permuted-table control."""
    chance = ", ".join(sorted({f"{constant_fact(j):.3f}" for j in main_jobs}))
    parts = [f"Held-out keys (the best constant answer scores {chance}):", "", *cell_table(main_jobs, methods), "",
             "Share of the tuned donor's held-out fact gain:", "", *share_header(main_jobs, "method")]
    for method, group in ordered(by(main_jobs, variant), methods).items():
        parts.append(share_row(f"`{method}`", group, model_of(method)))
    parts += ["", "Validation keys pick:", "", *choices(main_jobs, methods, cell_of, labels), ""]
    if permuted:
        parts += ["The permuted-table control: the block is tuned on another table (`task.table_seed=1`) and each "
                  "model is scored against that table. A graft that reads the block out answers the permuted "
                  "values as well as the original graft answers the original ones.", "", *cell_table(permuted), ""]
    return parts


def build(runs: Path) -> str:
    jobs = [j for j in load_jobs(runs) if j.experiment in SKILL + KNOWLEDGE]
    if not jobs:
        raise SystemExit(f"no beyond-the-paper runs under {runs}: run `bash docs/replicate_beyond.sh` first")
    skill = [j for j in jobs if j.experiment in SKILL]
    parts = [f"_Generated by `python docs/make_beyond.py --runs {runs}` from {len(jobs)} jobs. "
             f"Intervals: {INTERVAL_METHOD}._", ""]
    if skill:
        parts += ["### The input-dependent skill: held-out accuracy (fact) per method and cell", "",
                  f"![Held-out accuracy per cell](figures/{skill_figure(skill).name})", "",
                  *summary_table(skill), "", "### Which method each cell's validation split picks", "",
                  *choices(skill), ""]
        for h in [h for h in CELLS if any(host(j) == h for j in skill)]:
            init, width = CELLS[h]
            parts += [f"### The input-dependent skill: host `{h}` ({init} initialisation, {width} width)", "",
                      *cell_table([j for j in skill if host(j) == h]), ""]
    if any(j.experiment in KNOWLEDGE for j in jobs):
        parts += ["### Knowledge: 128 facts stored by the block, scored on the 48 keys no translator saw", "",
                  *knowledge_tables([j for j in jobs if j.experiment == "beyond_knowledge"],
                                    [j for j in jobs if j.experiment == "knowledge_permuted"])]
    return "\n".join(parts)


if __name__ == "__main__":
    main("BEYOND_THE_PAPER.md", build, __doc__)
