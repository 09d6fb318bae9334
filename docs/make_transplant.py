"""Regenerates the generated blocks of docs/TRANSPLANT.md (and its figures) from finished transplant jobs.

    python docs/make_transplant.py outputs/transplant/runs      # the jobs of experiment=transplant_k

Every ``results.json`` of stage ``transplant`` under the folder is read; one job per pair (a pair found
twice is refused). For each pair the block between ``<!-- <pair>:start -->`` and ``<!-- <pair>:end -->``
is replaced by the job's report (tables, top-K among single random draws, intervals from
grafting.metrics.stats.seed_item_interval), and ``<!-- draws:start -->`` ... ``<!-- draws:end -->`` by
a summary of the verdicts of both pairs. The hand-written account around the blocks stays.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from grafting.transplant.report import P_SHOWN, scorer_verdicts, sweep_markdown

PAIRS = ("generation", "instruct")


def jobs_by_pair(folder: Path) -> dict[str, dict]:
    """pair -> results of its finished job under ``folder``."""
    found: dict[str, dict] = {}
    for path in sorted(folder.rglob("results.json")):
        job = json.loads(path.read_text())
        if job.get("stage") != "transplant" or job["meta"].get("pair") not in PAIRS:
            continue
        pair = job["meta"]["pair"]
        if pair in found:
            raise SystemExit(f"two finished jobs for pair {pair!r}: {found[pair]['_path']} and {path.parent}")
        found[pair] = {**job, "_path": str(path.parent)}
    if not found:
        raise SystemExit(f"no finished transplant job under {folder}")
    return found


def _draws(job: dict) -> dict[float, list[dict]]:
    return {float(a): rows for a, rows in (job.get("draws") or {}).items()}


def pair_markdown(job: dict) -> str:
    """The job's report, re-rendered from its results (the level-2 title dropped: the document has its own)."""
    md = sweep_markdown(job["summary"], job["metric"], job["target"], job["source"], job["meta"], _draws(job))
    return md.split("\n", 2)[2] if md.startswith("## ") else md


def draws_summary(jobs: dict[str, dict]) -> str:
    """Per pair and scorer: the Ks where top-K lies above (and below) single random and matched draws."""
    lines = [f"| pair | scorer | K above single random draws (p ≤ {P_SHOWN}) | K below them | K above "
             "layer-matched draws | K above kind-matched draws | draws per K |", "|---|---|---|---|---|---|---|"]
    for pair in PAIRS:
        job = jobs.get(pair)
        if job is None:
            continue
        alpha = float(job["config"]["transplant"]["alphas"][-1])
        verdicts = scorer_verdicts(job["summary"], alpha, job["meta"]["scorers"], job["meta"]["n_candidates"],
                                   _draws(job).get(alpha))
        for v in verdicts:
            def ks(key: str, v=v) -> str:
                return str(v.get(key, "n/a") or "none").replace("'", "")

            n = v.get("n_draws_random", 0)
            matched = v.get("n_draws_layer", 0)
            lines.append(f"| {pair} | `{v['scorer']}` | {ks('ks_beating_random')} | {ks('ks_below_random')} | "
                         f"{ks('ks_beating_layer')} | {ks('ks_beating_kind')} | {n} random, {matched} matched |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, body: str, path: Path) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block to fill")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n\n{body}\n{end}", text, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder with the jobs of experiment=transplant_k")
    parser.add_argument("--doc", type=Path, default=Path(__file__).resolve().parent / "TRANSPLANT.md")
    args = parser.parse_args()
    jobs = jobs_by_pair(args.runs)
    text = args.doc.read_text()
    for pair, job in jobs.items():
        text = replace_block(text, pair, pair_markdown(job), args.doc)
        figure = Path(job["_path"]) / job["figure"]
        if figure.is_file():
            shutil.copyfile(figure, args.doc.parent / "figures" / f"transplant_{pair}.png")
    text = replace_block(text, "draws", draws_summary(jobs), args.doc)
    args.doc.write_text(text)
    sources = ", ".join(f"{pair}: {job['_path']}" for pair, job in jobs.items())
    print(f"wrote {args.doc} from {sources}")


if __name__ == "__main__":
    main()
