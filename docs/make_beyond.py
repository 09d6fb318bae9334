"""The tables of docs/BEYOND_THE_PAPER.md, from the beyond-the-paper multiruns.

    python train.py -m experiment=beyond_tiny hydra.sweep.dir=outputs/replication/beyond/<lane>
    python docs/make_beyond.py [--runs outputs/replication]

One table per host width: each method's graft beside its controls (the same method with the vanilla
block; the tuned block between untrained identity translators; the equal-parameter host LoRA), then
the references. Cells are means over seeds with 95% bootstrap intervals (as docs/RESULTS.md).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_results import Job, interval, load_jobs, main, share_header, share_row  # noqa: E402

from grafting.metrics.stats import format_interval, separated  # noqa: E402

METRICS = ["f_H", "f_S", "fact", "kl_host", "MLM"]
EXPERIMENTS = ("beyond", "beyond_knowledge")
# what each variant is on the command line (+variant=<name>)
METHODS = {"paper": "the paper's alignment", "host_lora": "the paper's alignment (+ host LoRA control)", "procrustes": "closed-form rotation",
           "procrustes_init": "the paper's KL from the closed-form rotation",
           "distill": "paper + distillation phase",
           "distill_long": "paper + 4x the distillation phase", "span2": "graft a span of 2 blocks"}


def _variant(job: Job) -> str:
    # the setting holds the overrides with Hydra's "+" stripped (grafting.reporting.aggregate.job_overrides)
    return next((p.split("=", 1)[1] for p in job.setting.split() if p.startswith("variant=")), "paper")


def _host(job: Job) -> str:
    return str(job.results["config"]["host"]["name"])


def aim(group: list[Job], model: str = "Grafted") -> str:
    """The issue's cross-width aim: f_H >= 0.5, its vanilla-block control <= 0.1, kl_host no worse than Tuned's."""
    f_h, control = interval(group, model, "f_H"), interval(group, "VanillaGraft", "f_H")
    kl, tuned_kl = interval(group, model, "kl_host"), interval(group, "Tuned", "kl_host")
    if any(math.isnan(x[0]) for x in (f_h, control, kl, tuned_kl)):
        return "n/a"
    above = separated(f_h, control) and f_h[0] > control[0]
    parts = [f"f_H {'≥' if f_h[0] >= 0.5 else '<'} 0.5", f"control {'≤' if control[0] <= 0.1 else '>'} 0.1",
             f"kl_host {'≤' if kl[0] <= tuned_kl[0] else '>'} Tuned's", "above control" if above else "not above control"]
    return ", ".join(parts)


def _by_variant(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by method, in the order of METHODS."""
    by_variant: dict[str, list[Job]] = {}
    for job in jobs:
        by_variant.setdefault(_variant(job), []).append(job)
    order = [v for v in METHODS if v in by_variant] + [v for v in by_variant if v not in METHODS]
    return {v: by_variant[v] for v in order}


def width_table(jobs: list[Job], with_aim: bool = True) -> list[str]:
    """Each method's graft beside its controls, then the references; ``with_aim``: the cross-width aim per method."""
    lines = ["| method | model | seeds | " + " | ".join(METRICS) + (" | aim |" if with_aim else " |"),
             "|---|---|---|" + "---|" * (len(METRICS) + with_aim)]
    for variant, group in _by_variant(jobs).items():
        # host_lora's graft is the paper's own (the same seeds give the same graft): only its LoRA row is new
        models = ["HostLoRA"] if variant == "host_lora" else ["Grafted", "VanillaGraft", "IdentityGraft"]
        for model in models:
            cells = [format_interval(interval(group, model, m)) for m in METRICS]
            note = (aim(group) if model == "Grafted" else "") if with_aim else None
            lines.append(f"| `{variant}` | {model} | {len(group)} | " + " | ".join(cells)
                         + (f" | {note} |" if with_aim else " |"))
    one_per_seed = list({job.seed: job for job in jobs}.values())  # the references are the same in every method
    for model in ("Tuned", "Vanilla", "Host"):
        cells = [format_interval(interval(one_per_seed, model, m)) for m in METRICS]
        lines.append(f"| (references) | {model} | {len(one_per_seed)} | " + " | ".join(cells)
                     + (" | |" if with_aim else " |"))
    return lines


def fact_table(jobs: list[Job]) -> list[str]:
    """Per method, the share of the tuned donor's fact gain that its graft carries (docs/make_results.py)."""
    return share_header(jobs, "method") + [share_row(f"`{v}`", group, "HostLoRA" if v == "host_lora" else "Grafted")
                                           for v, group in _by_variant(jobs).items()]


def _commands(jobs: list[Job]) -> list[str]:
    def override(part: str) -> str:  # variant is not in the base config: it is added with "+"
        return "+" + part if part.startswith("variant=") else part

    runs = sorted({" ".join([f"python train.py -m experiment={j.experiment}_tiny",
                             *(override(p) for p in j.setting.split())]) for j in jobs})
    return [f"- `{run}`" for run in runs]


#: Runs of the replication that are the paper's method in these settings (no +variant): the protocol and
#: the host-width ablation for modular addition, the knowledge experiment for the facts.
PAPER_RUNS = {"paper_protocol": "beyond", "host_size": "beyond", "knowledge": "beyond_knowledge"}


def build(runs: Path) -> str:
    jobs = [j for j in load_jobs(runs) if j.experiment in EXPERIMENTS or j.experiment in PAPER_RUNS]
    if not any(j.experiment in EXPERIMENTS for j in jobs):
        raise SystemExit(f"no beyond-the-paper runs under {runs}")
    parts = [f"_Generated by `python docs/make_beyond.py --runs {runs}` from {len(jobs)} jobs "
             "(the `paper` rows are the replication's own runs of the paper's method)._", ""]
    for experiment, title in (("beyond", "modular addition (format and answer)"),
                              ("beyond_knowledge", "the learnable facts (task.kind=recall)")):
        mine = [j for j in jobs if j.experiment == experiment or PAPER_RUNS.get(j.experiment) == experiment]
        for host in sorted({_host(j) for j in mine}):
            group = [j for j in mine if _host(j) == host]
            parts += [f"### {title}: host `{host}`", "", "Commands (5 seeds each unless the table says fewer):", "",
                      *_commands(group), "", *width_table(group, with_aim=experiment == "beyond"), ""]
            if experiment == "beyond_knowledge":
                parts += ["Share of the tuned donor's fact gain that each graft carries (per seed, then mean and "
                          "interval):", "", *fact_table(group), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    main("BEYOND_THE_PAPER.md", build, __doc__)
