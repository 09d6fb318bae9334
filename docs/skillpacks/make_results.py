"""Writes docs/skillpacks/results.md and budget_curves.png from a finished `experiment=skillpack_budgets` sweep.

    python docs/skillpacks/make_results.py outputs/skillpack_budgets/multiruns/<time> [--out docs/skillpacks]

Every job's ``results.json`` (one per seed) is read; each table cell is the mean over seeds with a 95%
percentile-bootstrap interval (grafting.metrics.stats.bootstrap_interval) and the number of seeds.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from grafting.metrics.stats import bootstrap_interval
from grafting.skillpack.report import budget_figure, summarize_budgets, summary_markdown

SWEEP = "python train.py -m experiment=skillpack_budgets"


def _fmt(stats: tuple[float, float, float]) -> str:
    mean, low, high = stats
    return "nan" if math.isnan(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _jobs(multirun: Path) -> list[dict]:
    jobs = [json.loads(p.read_text()) for p in sorted(multirun.rglob("results.json"))]
    jobs = [j for j in jobs if j.get("stage") == "skillpack" and j.get("budgets")]
    if not jobs:
        raise SystemExit(f"no finished skillpack job with budget curves under {multirun}")
    return jobs


def fusion_markdown(jobs: list[dict], tasks: list[str]) -> str:
    rows = list(dict.fromkeys(r for j in jobs for r in j["fusion"]["scores"]))
    lines = ["| | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row in rows:
        cells = [_fmt(bootstrap_interval([j["fusion"]["scores"][row].get(t, math.nan) for j in jobs])) for t in tasks]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    acc = {t: _fmt(bootstrap_interval([j["fusion"]["router_paraphrase_accuracy"][t] for j in jobs])) for t in tasks}
    chosen = [j["fusion"]["mergers_chosen_on_val"] for j in jobs]
    lines += ["", "Router accuracy on held-out paraphrased instructions (one shared `Answer:` cue): "
              + ", ".join(f"{t} {v}" for t, v in acc.items()),
              "", "Merger settings chosen on validation, per seed: "
              + "; ".join(", ".join(f"{m} {c['params']}" for m, c in ch.items()) for ch in chosen)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    jobs = _jobs(args.multirun)
    seeds = sorted(j["config"]["seed"] for j in jobs)
    summary = summarize_budgets([j["budgets"] for j in jobs])
    tasks = list(jobs[0]["budgets"])
    budget_figure({t: [r for r in summary if r["task"] == t] for t in tasks}, args.out / "budget_curves.png",
                  f"Retained gain vs bytes, mean and 95% interval over seeds {seeds}")
    host, donor = jobs[0]["config"]["host"]["name"], jobs[0]["config"]["donor"]["name"]
    md = [f"# SkillPacks at equal byte budgets: target {host}, source {donor}", "",
          f"Sweep: `{SWEEP}` (seeds {seeds}); tables: `python docs/skillpacks/make_results.py {args.multirun}`.",
          "Every cell: % of the full fine-tune's gain kept on the test split, mean [95% bootstrap interval] over",
          "seeds; the full fine-tune is the dense pack applied to the target in its own dtype. Bytes are the pack's",
          "tensor data as % of the dense float32 delta; each method's setting is the largest that fits the budget.",
          "Choices (merge weights, TIES density, DARE rate, LoRA lr) are made on the validation split.", "",
          "![budget curves](budget_curves.png)", ""]
    for t in tasks:
        full = bootstrap_interval([j["full"][t]["score"] for j in jobs])
        base = bootstrap_interval([j["base"][t]["score"] for j in jobs])
        src = bootstrap_interval([j["source"][t]["score"] for j in jobs])
        md += [f"## {t}", "", f"`{SWEEP}`: base {_fmt(base)}, source {_fmt(src)}, full fine-tune {_fmt(full)}", "",
               summary_markdown(summary, t)]
    md += ["## Fusion and routing (score on test)", "", f"`{SWEEP}`", "", fusion_markdown(jobs, tasks)]
    minutes = [j["wall_seconds"] / 60 for j in jobs if "wall_seconds" in j]
    if minutes:
        md += [f"Cost: {_fmt(bootstrap_interval(minutes))} minutes of wall time per job."]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / 'results.md'} from {len(jobs)} jobs")


if __name__ == "__main__":
    main()
