"""Regenerates the tables of docs/skillpacks/results.md (and budget_curves.png) from finished sweeps.

    python docs/skillpacks/make_results.py outputs/skillpack_budgets [--hetero outputs/skillpack_hetero]

Every job's ``results.json`` under the folder (one per seed) is read; each table cell is the mean over
seeds with the project's 95% interval (grafting.metrics.stats.seed_item_interval: seeds and test items;
INTERVAL_METHOD is printed into the document). Only the text
between ``<!-- budgets:start -->`` / ``<!-- budgets:end -->`` (and the ``hetero`` markers) is replaced,
so the hand-written account around the tables stays.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from grafting.metrics.stats import INTERVAL_METHOD, format_interval, seed_item_interval
from grafting.skillpack.report import budget_figure, summarize_budgets, summary_markdown

SWEEP = "python train.py -m experiment=skillpack_budgets"
HETERO = "python train.py -m experiment=skillpack_hetero"


def _jobs(folder: Path, run_name: str) -> list[dict]:
    """Finished jobs of one experiment under ``folder``; a seed found twice is an error (which one counts?)."""
    jobs = [{**json.loads(p.read_text()), "_path": str(p.parent)} for p in sorted(folder.rglob("results.json"))]
    jobs = [j for j in jobs if j.get("stage") == "skillpack" and j.get("budgets")
            and j.get("config", {}).get("run_name") == run_name]
    if not jobs:
        raise SystemExit(f"no finished {run_name} job (results.json with budget curves) under {folder}")
    return jobs


def _seeds(jobs: list[dict], key=lambda j: ()) -> list[int]:
    seen: dict = {}
    for j in jobs:
        k = (*key(j), j["config"]["seed"])
        if k in seen:
            raise SystemExit(f"two finished jobs for {k}: {seen[k]} and {j['_path']}; keep one")
        seen[k] = j["_path"]
    return sorted({j["config"]["seed"] for j in jobs})


def _n_test(jobs: list[dict]) -> int:
    """Test prompts per score (``skill.n_test``): the items behind every score's interval."""
    return int(jobs[0]["config"].get("skill", {}).get("n_test", 300))


def score_interval(values: list[float], n_items: int) -> tuple[float, float, float]:
    """A test score (in [0, 1]) over seeds: its item variance is at most s(1 - s), a proportion's."""
    return seed_item_interval(values, n_items, proportion=True)


def fusion_markdown(jobs: list[dict], tasks: list[str]) -> str:
    rows = list(dict.fromkeys(r for j in jobs for r in j["fusion"]["scores"]))
    n = _n_test(jobs)
    lines = ["| | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row in rows:
        cells = [format_interval(score_interval([j["fusion"]["scores"][row].get(t, math.nan) for j in jobs], n))
                 for t in tasks]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    # runs made before there were several routers hold one (the learned one) under the legacy keys
    routers = jobs[0]["fusion"].get("routers") or {"learned": None}
    lines += ["", "Router accuracy (share of prompts sent to the task's own pack), on the test prompts in their "
              "training template / on held-out paraphrased instructions that share one `Answer:` cue (no template "
              "gives the task away):", "", "| router | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for kind in routers:
        def accuracy(j: dict, key: str, t: str, kind: str = kind) -> float:
            r = (j["fusion"].get("routers") or {}).get(kind)
            return r[key][t] if r else j["fusion"][f"router_{key}"][t]

        cells = [f"{format_interval(score_interval([accuracy(j, 'test_accuracy', t) for j in jobs], n))} / "
                 f"{format_interval(score_interval([accuracy(j, 'paraphrase_accuracy', t) for j in jobs], n))}"
                 for t in tasks]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    chosen = [j["fusion"]["mergers_chosen_on_val"] for j in jobs]
    lines += ["", "Merger settings chosen on validation, per seed: "
              + "; ".join(", ".join(f"{m} {c['params']}" for m, c in ch.items()) for ch in chosen)]
    return "\n".join(lines) + "\n"


def lora_line(jobs: list[dict], task: str) -> str:
    """LoRA's rank at each budget and the learning rate validation chose, per seed."""
    per_seed = []
    for j in sorted(jobs, key=lambda j: j["config"]["seed"]):
        rows = sorted((r for r in j["budgets"][task] if r["method"] == "lora" and r.get("level")),
                      key=lambda r: r["budget"])
        if rows:
            ranks = "/".join(str(r["level"]["rank"]) for r in rows)
            per_seed.append(f"seed {j['config']['seed']}: r {ranks}, lr {rows[0]['level']['lr']:g}")
    return ("LoRA ranks by budget and the learning rate chosen on validation: " + "; ".join(per_seed) + ".\n"
            if per_seed else "")


def budgets_markdown(jobs: list[dict], folder: Path, out: Path) -> str:
    seeds = _seeds(jobs)
    n = _n_test(jobs)
    refs = [{t: (j["base"][t]["score"], j["full"][t]["score"]) for t in j["budgets"]} for j in jobs]
    summary = summarize_budgets([j["budgets"] for j in jobs], refs)
    tasks = list(jobs[0]["budgets"])
    budget_figure({t: [r for r in summary if r["task"] == t] for t in tasks}, out / "budget_curves.png",
                  f"Retained gain vs bytes, mean and 95% interval over seeds {seeds}")
    host, donor = jobs[0]["config"]["host"]["name"], jobs[0]["config"]["donor"]["name"]
    md = [f"_Generated by `python docs/skillpacks/make_results.py {folder}` from {len(jobs)} jobs "
          f"(seeds {seeds}) of `{SWEEP}`: target {host}, source {donor}._", "",
          "Every cell: % of the full fine-tune's gain kept on the test split, mean [95% interval], then "
          "the bytes the pack actually uses as % of the dense delta's (n seeds). `dense` (the full fine-tune, 100% "
          "of the bytes) is 100 by definition and fits no budget.", "",
          f"Intervals: {INTERVAL_METHOD}. Items: the {n} test prompts of each score; a score in [0, 1] counts "
          "as a proportion (its item variance is at most s(1 - s)), and a retained gain carries its pack "
          "score's item noise scaled by 100 / (full - base).", "",
          "![budget curves](budget_curves.png)", ""]
    for t in tasks:
        full = score_interval([j["full"][t]["score"] for j in jobs], n)
        base = score_interval([j["base"][t]["score"] for j in jobs], n)
        src = score_interval([j["source"][t]["score"] for j in jobs], n)
        md += [f"### {t}", "", f"Test score: base {format_interval(base)}, source {format_interval(src)}, full fine-tune (dense pack) "
               f"{format_interval(full)}.", "", summary_markdown(summary, t), lora_line(jobs, t)]
    if all("fusion" in j for j in jobs):
        md += ["### Fusion and routing (score on test)", "", fusion_markdown(jobs, tasks)]
    minutes = [j["wall_seconds"] / 60 for j in jobs if "wall_seconds" in j]
    if minutes:
        md += [f"Cost: {format_interval(seed_item_interval(minutes))} minutes of wall time per job (one CPU core "
               "each; mean and t-interval over jobs)."]
    return "\n".join(md)


def _cell(values: list[float], digits: int = 3, n_items: int | None = None) -> str:
    """A mean with its interval (over seeds and, for a score, its ``n_items`` test prompts); one run of a
    value without items is printed alone (it has no interval)."""
    if n_items:
        return format_interval(score_interval(values, n_items), digits)
    return f"{values[0]:.{digits}f}" if len(values) == 1 else format_interval(seed_item_interval(values), digits)


def hetero_markdown(jobs: list[dict], folder: Path) -> str:
    """Per skill: the GPT-2 source, and the target trained on its answers by SFT alone or SFT + DPO."""
    by_dpo = {d: [j for j in jobs if bool(j["config"]["skill"]["dpo"]["enabled"]) is d] for d in (False, True)}
    seeds = _seeds(jobs, key=lambda j: (bool(j["config"]["skill"]["dpo"]["enabled"]),))
    cfg = jobs[0]["config"]
    arch = cfg["donor"].get("arch") or {}
    tasks = list(jobs[0]["budgets"])
    fractions = sorted({float(r["budget"]) for j in jobs for rows in j["budgets"].values() for r in rows})
    methods = list(dict.fromkeys(r["method"] for j in jobs for rows in j["budgets"].values() for r in rows))
    md = [f"_Generated by `python docs/skillpacks/make_results.py ... --hetero {folder}` from {len(jobs)} jobs "
          f"(seeds {seeds}) of `{HETERO}`: source {cfg['donor']['name']} ({arch.get('model_type', '?')}, "
          f"{cfg['donor'].get('tokenizer_vocab', '?')}-token tokenizer), target {cfg['host']['name']}._", "",
          f"Test scores: mean [95% interval: {INTERVAL_METHOD}, over seeds and the {_n_test(jobs)} test prompts]; "
          "packs: % of the full fine-tune's gain kept (one seed each: no interval).", ""]
    cols = [f"{m} @ {100 * f:g}%" for f in fractions for m in methods]
    md += ["| skill | target training | n | source | base | full fine-tune | " + " | ".join(cols) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(cols)]
    for t in tasks:
        for dpo, group in by_dpo.items():
            if not group:
                continue
            cells = [_cell([j[k][t]["score"] for j in group], n_items=_n_test(jobs)) for k in ("source", "base", "full")]
            for f in fractions:
                for m in methods:
                    gains = [r["pct_gain"] for j in group for r in j["budgets"][t]
                             if r["method"] == m and float(r["budget"]) == f]
                    cells.append(_cell(gains, 1) if gains else "")
            md.append(f"| {t} | {'SFT + DPO' if dpo else 'SFT'} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def replace_block(text: str, name: str, body: str, path: Path) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block to fill")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n\n{body}\n{end}", text, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budgets", type=Path, help="folder with the jobs of experiment=skillpack_budgets")
    parser.add_argument("--hetero", type=Path, help="folder with the jobs of experiment=skillpack_hetero")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    path = args.out / "results.md"
    text = path.read_text()
    jobs = _jobs(args.budgets, "skillpack_budgets")
    text = replace_block(text, "budgets", budgets_markdown(jobs, args.budgets, args.out), path)
    if args.hetero:
        text = replace_block(text, "hetero", hetero_markdown(_jobs(args.hetero, "skillpack_hetero"), args.hetero), path)
    path.write_text(text)
    print(f"wrote {path} from {len(jobs)} budget jobs" + (f" and {args.hetero}" if args.hetero else ""))


if __name__ == "__main__":
    main()
