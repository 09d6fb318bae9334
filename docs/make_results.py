"""The tables and figures of docs/RESULTS.md, from the replication's multiruns.

    bash docs/replicate.sh                 # the runs (outputs/replication/<experiment>/...)
    python docs/make_results.py [--runs outputs/replication]

Every cell is the mean over seeds with the project's one 95% interval, which counts both the seeds and
the test items (grafting.metrics.stats.seed_item_interval). A grafted setting's transfer is called
*shown* only where its interval lies above both controls' (the same translators around the vanilla
block, and the tuned block between untrained identity translators).
The generated part of docs/RESULTS.md is the text between the ``tables`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafting.metrics.stats import INTERVAL_METHOD, format_interval, score_interval, separated, share_interval
from grafting.reporting.aggregate import finished_jobs, job_overrides

DOCS = Path(__file__).resolve().parent
START, END = "<!-- tables:start -->", "<!-- tables:end -->"
TASK = ["f_H", "f_S", "fact"]
WHOLE = ["f_H_whole", "f_S_whole", "fact_whole"]
LANGUAGE = ["P", "MLM", "ppl_ref", "kl_host"]
PAPER_METRICS = ["f_H", "f_S", "fact", "P", "MLM"]
CONTROLS = ("VanillaGraft", "IdentityGraft")
PROTOCOL = "paper_protocol"

# The paper's Tables 1-10 (pythia-70m into pythia-70m-deduped unless said; one run each, no interval).
PAPER = {
    "loss_ablation": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "residual": [0.000, 0.645, 0.233, 1.236, 0.022],
                      "logits": [0.000, 0.012, 0.046, 1.370, 0.012], "Vanilla": [0.000, 0.000, 0.000, 1.230, 0.749]},
    "dest_layer": {"L1": [0.000, 0.000, 0.000, 1.006, 0.000], "L2": [0.000, 0.001, 0.038, 1.290, 0.121],
                   "L3": [0.000, 0.000, 0.000, 1.301, 0.054], "L4": [0.000, 0.723, 0.233, 1.281, 0.042],
                   "L5": [0.000, 0.000, 0.000, 1.055, 0.010]},
    "align_data": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "Mod": [0.000, 0.910, 0.233, 1.343, 0.029],
                   "Mixed": [0.000, 0.706, 0.233, 1.305, 0.104], "Fineweb": [0.000, 0.639, 0.233, 1.337, 0.024],
                   "Vanilla": [0.000, 0.000, 0.000, 1.231, 0.749]},
    "strategy": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "original": [0.000, 0.706, 0.233, 1.305, 0.104],
                 "direct": [0.000, 0.000, 0.000, 1.087, 0.138], "Vanilla": [0.000, 0.000, 0.000, 1.231, 0.749]},
    "host_size": {"Tuned": [1.000, 1.000, 0.229, 1.222, 0.619], "70m": [0.000, 0.645, 0.233, 1.236, 0.022],
                  "160m": [0.000, 0.245, 0.027, 1.271, 0.111], "410m": [0.000, 0.000, 0.000, 1.338, 0.000],
                  "Vanilla": [0.000, 0.000, 0.002, 1.198, 0.722]},
}

# experiment -> (title, label of the protocol's own row or None when it has none)
EXPERIMENTS = {
    "loss_ablation": ("Loss: residual KL (the protocol) vs logits KL — paper Tables 1-2", "loss=residual"),
    "strategy": ("Strategy: original (the protocol) vs direct — paper Tables 7-8", "graft.strategy=original"),
    "align_data": ("Alignment data: general text (the protocol) vs Mod vs Mixed — paper Tables 5-6",
                   "dataloader=text"),
    "dest_layer": ("Destination block for donor block 2 (dest 2 is the protocol) — paper Tables 3-4",
                   "graft.dest=2"),
    "host_size": ("Host width: tiny-host d=128 (the protocol), -m-shared and -m d=192, -l d=256 with 6 blocks — "
                  "paper Tables 9-10 (-m and -l are also independently initialised, as the paper's wider hosts are; "
                  "-m-shared holds the vanilla initialisation)", "host=tiny-host"),
    "pair_init": ("Pair initialisation (beyond the paper): shared-init host (the protocol) vs independent init",
                  "host=tiny-host"),
    "pair_seed": ("Pair seeds: the whole shared-init pair re-initialised and pretrained (seed 0 is the shipped "
                  "pair)", "tiny.pair_seed=0"),
    "protocol_variants": ("Our variants of the protocol (losses, closed-form translators)", "protocol"),
}


@dataclass
class Job:
    experiment: str
    setting: str  # the job's overrides without the seed, e.g. "loss=logits"
    seed: int
    results: dict[str, Any]

    def metric(self, model: str, name: str) -> float:
        value = (self.results.get("models") or {}).get(model, {}).get(name)
        return float(value) if isinstance(value, (int, float)) else math.nan


def load_jobs(runs: Path) -> list[Job]:
    """Every finished job under ``runs/<experiment>/``."""
    jobs, seen = [], {}
    for job_dir, results in finished_jobs(runs):
        experiment = job_dir.relative_to(runs).parts[0]
        setting = " ".join(sorted(f"{k}={v}" for k, v in job_overrides(job_dir).items() if k != "experiment"))
        seed = int(results["config"]["seed"])
        # the same job in two sweep folders would count its seed twice
        key = (experiment, setting, seed, results["config"]["host"]["name"])
        if key in seen:
            raise SystemExit(f"the same job twice: {seen[key]} and {job_dir}; move one out of {runs}")
        seen[key] = job_dir
        jobs.append(Job(experiment, setting, seed, results))
    return jobs


def interval(jobs: list[Job], model: str, metric: str) -> tuple[float, float, float]:
    """The project's interval (seeds and test items) of ``model``'s ``metric`` over ``jobs``."""
    return score_interval([(j.results.get("models") or {}).get(model) or {} for j in jobs], metric)


def loss_interval(values: list[float]) -> tuple[float, float, float]:
    """A training diagnostic over seeds (no test items): the same interval with the seed term alone."""
    return score_interval([{"v": v} for v in values], "v")


def _settings(jobs: list[Job], experiment: str, protocol_label: str | None) -> dict[str, list[Job]]:
    """``{row label: jobs}``: the protocol's own jobs first (under the experiment's label), then the sweep's."""
    out: dict[str, list[Job]] = {}
    if protocol_label is not None:
        out[protocol_label] = [j for j in jobs if j.experiment == PROTOCOL]
    for job in jobs:
        if job.experiment == experiment:
            out.setdefault(job.setting or "(defaults)", []).append(job)
    return {k: v for k, v in out.items() if v}


def transfer_verdict(group: list[Job], metric: str) -> str:
    """``shown`` when Grafted's interval lies above both controls'; else ``not shown`` and the control(s) it fails to beat."""
    grafted = interval(group, "Grafted", metric)
    controls = {c: interval(group, c, metric) for c in CONTROLS}
    if any(math.isnan(c[0]) for c in controls.values()):
        return "no controls"
    unbeaten = [c for c, ci in controls.items() if not (separated(grafted, ci) and grafted[0] > ci[0])]
    return "shown" if not unbeaten else f"not shown (vs {', '.join(unbeaten)})"


def table(settings: dict[str, list[Job]], metrics: list[str]) -> list[str]:
    """One row per (setting, model): the grafted model and its controls, then the references."""
    lines = ["| setting | model | seeds | " + " | ".join(metrics) + " | f_S transfer | f_H transfer |",
             "|---|---|---|" + "---|" * (len(metrics) + 2)]
    for label, group in settings.items():
        for model in ("Grafted", *CONTROLS):
            verdicts = ([transfer_verdict(group, "f_S"), transfer_verdict(group, "f_H")] if model == "Grafted"
                        else ["", ""])
            cells = [format_interval(interval(group, model, m)) for m in metrics]
            lines.append(f"| {label} | {model} | {len(group)} | " + " | ".join(cells) + " | " + " | ".join(verdicts)
                         + " |")
    # References once; again for a setting that changes them (another host: pair_init, host_size).
    shown: dict[str, list[str]] = {}
    for label, group in settings.items():
        for model in ("Tuned", "Vanilla", "Host"):
            # the host's KL to itself is 0 by definition, not a measurement with an interval
            cells = ["0 (itself)" if (model, m) == ("Host", "kl_host") else format_interval(interval(group, model, m))
                     for m in metrics]
            if shown.get(model, cells) != cells or model not in shown:
                row_label = "(references)" if model not in shown else f"(references, {label})"
                lines.append(f"| {row_label} | {model} | {len(group)} | " + " | ".join(cells) + " | | |")
                shown.setdefault(model, cells)
    return lines


def paper_table(name: str) -> list[str]:
    columns = PAPER[name]
    lines = ["| paper | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for i, metric in enumerate(PAPER_METRICS):
        lines.append(f"| {metric} | " + " | ".join(f"{v[i]:.3f}" for v in columns.values()) + " |")
    return lines


def commands(experiment: str, has_protocol_row: bool) -> str:
    protocol = f"python train.py -m experiment={PROTOCOL}_tiny"
    own = f"python train.py -m experiment={experiment}_tiny"
    return f"`{own}`" + (f" (its protocol row: `{protocol}`)" if has_protocol_row else "")


def alignment_report(jobs: list[Job]) -> list[str]:
    """How far the Adam translators end from the closed-form MSE optimum (protocol jobs)."""
    lines = ["| phase | held-out loss before → after | MSE / optimum's MSE − 1 | ‖W − W*‖ / ‖W*‖ |",
             "|---|---|---|---|"]
    for phase in ("pre", "post"):
        hist = [j.results.get("align", {}).get(phase, {}) for j in jobs]
        before = loss_interval([h.get("val_loss_before", math.nan) for h in hist])
        after = loss_interval([h.get("val_loss_after", math.nan) for h in hist])
        excess = loss_interval([h.get("optimum", {}).get("mse_excess", math.nan) for h in hist])
        dist = loss_interval([h.get("optimum", {}).get("weight_rel_distance", math.nan) for h in hist])
        # before any step the translators are the identity and the held-out batches fixed: one value for all seeds
        before_cell = f"{before[0]:.3f} (every seed)" if before[1] == before[2] else format_interval(before)
        lines.append(f"| {phase}-T | {before_cell} → {format_interval(after)} | "
                     f"{format_interval(excess)} | {format_interval(dist)} |")
    return lines


def samples(jobs: list[Job], models: tuple[str, ...] = ("Tuned", "Grafted", "VanillaGraft", "Host")) -> list[str]:
    """What each model of the first protocol job actually answers (first three test prompts)."""
    job = min(jobs, key=lambda j: j.seed)
    lines = ["| model | answers to the first three test prompts (raw, up to 8 tokens) |", "|---|---|"]
    for model in models:
        outs = [s["output"] for s in job.results["models"].get(model, {}).get("samples", [])[:3]]
        lines.append(f"| {model} | " + " · ".join(f"`{json.dumps(o)[1:-1]}`" for o in outs) + " |")
    return lines


def constant_fact(job: Job) -> float:
    """The fact of the best constant answer on the job's test items (what answering one digit scores)."""
    from collections import Counter

    from grafting.data.modular import task_from_config

    items = task_from_config(job.results["config"]["task"]).split("test")[: int(job.results["config"]["evaluation"]
                                                                               ["task_points"])]
    return max(Counter(ex.answer for ex in items).values()) / len(items)


def share_header(jobs: list[Job], label: str = "model") -> list[str]:
    chance = ", ".join(sorted({f"{constant_fact(j):.3f}" for j in jobs}))
    return [f"| {label} | fact | share of the gain over VanillaGraft | share of the gain over the better of "
            f"VanillaGraft and chance (best constant answer: {chance}) |", "|---|---|---|---|"]


def share_row(name: str, jobs: list[Job], model: str = "Grafted") -> str:
    """``model``'s fact and its share of the tuned donor's fact gain over the vanilla-block control, and over the
    better of that control and the best constant answer (stricter: guessing one digit carries nothing)."""
    fact = {m: [j.metric(m, "fact") for j in jobs] for m in (model, "VanillaGraft", "Tuned")}
    floor = [max(c, constant_fact(j)) for c, j in zip(fact["VanillaGraft"], jobs, strict=True)]
    n = int(jobs[0].metric(model, "n")) if jobs else None
    return (f"| {name} | {format_interval(interval(jobs, model, 'fact'))} | "
            f"{format_interval(share_interval(fact[model], fact['VanillaGraft'], fact['Tuned'], n))} | "
            f"{format_interval(share_interval(fact[model], floor, fact['Tuned'], n))} |")


def provenance(jobs: list[Job]) -> str:
    prov = [j.results.get("provenance") or {} for j in jobs]
    commits = sorted({str((p.get("git") or {}).get("commit"))[:10] for p in prov})
    dirty = sorted({str((p.get("git") or {}).get("dirty")) for p in prov})
    versions = sorted({json.dumps(p.get("versions"), sort_keys=True) for p in prov})
    return (f"{len(jobs)} jobs; commit(s) {', '.join(commits)} (dirty: {', '.join(dirty)}); "
            f"versions: {'; '.join(versions)}")


def build(runs: Path) -> str:
    jobs = [j for j in load_jobs(runs) if j.experiment in EXPERIMENTS or j.experiment == PROTOCOL]
    protocol = [j for j in jobs if j.experiment == PROTOCOL]
    if not protocol:
        raise SystemExit(f"no {PROTOCOL} runs under {runs}: run `bash docs/replicate.sh` first")
    metrics = TASK + ["f_S_whole"] + LANGUAGE
    parts = [f"_Generated by `python docs/make_results.py --runs {runs}` from {provenance(jobs)}. "
             f"Intervals: {INTERVAL_METHOD}._", "",
             "### The paper's protocol on the shipped pair", "",
             f"`python train.py -m experiment={PROTOCOL}_tiny` (seeds of the fine-tune and the alignment):", "",
             *table({"protocol": protocol}, metrics), "",
             f"![The protocol's task scores](figures/{protocol_figure(protocol).name})", "",
             "What the models answer (seed 0):", "", *samples(protocol), "",
             "Is the alignment converged? The Adam translators against the closed-form MSE optimum "
             "(least squares on the captured residuals, `align.solver=lstsq`), held out:", "",
             *alignment_report(protocol), ""]
    for name, (title, label) in EXPERIMENTS.items():
        if not any(j.experiment == name for j in jobs):
            parts += [f"### {title}", "", f"No runs under `{runs}`: `bash docs/replicate.sh {name}` makes them "
                      f"(`python train.py -m experiment={name}_tiny`). Tables made before the project's interval "
                      "are in the git history, not here.", ""]
            continue
        settings = _settings(jobs, name, label)
        parts += [f"### {title}", "", commands(name, label is not None) + ":", "", *table(settings, metrics), ""]
        if name in PAPER:
            parts += ["The paper's numbers (one run each):", "", *paper_table(name), ""]
    return "\n".join(parts)


def bar_figure(path: Path, groups: dict[str, dict[str, tuple[float, float, float]]], ylabel: str,
               title: str = "") -> Path:
    """Grouped bars with 95% interval whiskers: ``groups`` = {group label: {bar label: (mean, low, high)}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a bar with no value in any group is left out (its legend entry would point at nothing)
    bars = list(dict.fromkeys(b for g in groups.values() for b, v in g.items() if not math.isnan(v[0])))
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(groups) + 0.2 * len(bars) * len(groups), 3.4))
    for i, bar in enumerate(bars):
        xs, means, err = [], [], [[], []]
        for j, stats in enumerate(groups.values()):
            if bar in stats and not math.isnan(stats[bar][0]):
                mean, low, high = stats[bar]
                xs.append(j + (i - (len(bars) - 1) / 2) * width)
                means.append(mean)
                err[0].append(mean - low if not math.isnan(low) else 0.0)
                err[1].append(high - mean if not math.isnan(high) else 0.0)
        ax.bar(xs, means, width, yerr=err, capsize=2, label=bar, color=f"C{i % 10}")
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, len(bars)), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def protocol_figure(protocol: list[Job], path: Path = DOCS / "figures" / "results_protocol.png") -> Path:
    """The protocol's task scores per model, with the project's interval (RESULTS.md's main figure)."""
    models = ("Tuned", "Grafted", "VanillaGraft", "IdentityGraft", "Host")
    groups = {metric: {m: interval(protocol, m, metric) for m in models} for metric in TASK}
    return bar_figure(path, groups, "score on the 1000 test prompts",
                      f"The paper's protocol on the shipped pair ({len(protocol)} seeds, 95% intervals)")


def rewrite_tables(page: Path, tables: str) -> None:
    """Replace the text between the ``tables`` markers of ``page`` with ``tables``."""
    text = page.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{page}: missing the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(head + START + "\n\n" + tables + "\n" + END + tail)
    print(f"rewrote the tables of {page}")


def main(page: str = "RESULTS.md", tables=None, description: str | None = None) -> None:
    """``--runs <dir>`` on the command line, then ``page``'s tables rewritten from ``tables(runs)``."""
    parser = argparse.ArgumentParser(description=description or __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/replication"))
    args = parser.parse_args()
    rewrite_tables(DOCS / page, (tables or build)(args.runs))


if __name__ == "__main__":
    main()
