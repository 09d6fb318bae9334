"""The content-routing tables of docs/skillpacks/results.md, from finished `experiment=skillpack_content` runs.

    python docs/skillpacks/make_content.py outputs/skillpack_content

Five skills on disjoint word pools; each run (one per seed) scored every fusion row on the test problems in
three wordings (the skill's template, a held-out paraphrase, content alone) and served all skills' test
prompts as one mixed stream. This script reads the runs' ``results.json`` (nothing is recomputed) and
replaces the block between ``<!-- content:start -->`` / ``<!-- content:end -->``; intervals as everywhere
(seeds and test items, :func:`grafting.metrics.stats.seed_item_interval`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from grafting.metrics.stats import INTERVAL_METHOD, format_interval, seed_item_interval

HERE = Path(__file__).resolve().parent
WORDINGS = ("template", "paraphrase", "content")
FULL = "full fine-tune (one model per task)"


def load_runs(folder: Path) -> list[dict]:
    """The finished runs of the experiment under ``folder``, one per seed (a seed found twice is refused)."""
    runs = []
    for path in sorted(folder.rglob("results.json")):
        result = json.loads(path.read_text())
        if result.get("config", {}).get("run_name") == "skillpack_content" and "fusion" in result:
            runs.append(result)
    seeds = [r["config"]["seed"] for r in runs]
    if len(seeds) != len(set(seeds)):
        raise SystemExit(f"a seed is found twice under {folder}: {sorted(seeds)}")
    if not runs:
        raise SystemExit(f"no finished experiment=skillpack_content run under {folder}")
    return sorted(runs, key=lambda r: r["config"]["seed"])


def wording_view(run: dict, wording: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``(scores: row -> task -> score, routed_to_own: router -> task -> share)`` of one run in one wording."""
    fusion = run["fusion"]
    if wording == "template":
        scores = {row: v for row, v in fusion["scores"].items() if row != FULL}
        return scores, {kind: r["test_accuracy"] for kind, r in fusion["routers"].items()}
    return fusion["by_wording"][wording]["scores"], fusion["by_wording"][wording]["routed_to_own"]


def cell(values: list[float], n: int) -> str:
    return format_interval(seed_item_interval(values, n, proportion=True))


def wording_table(runs: list[dict], wording: str, tasks: list[str], n: int) -> list[str]:
    """Rows: each router (own-pack routing and score per task), then the merges, EMR, the oracle and the base."""
    views = [wording_view(r, wording) for r in runs]
    lines = [f"**Asked as {wording}.**", "",
             "| row | " + " | ".join(f"{t}: routed to own" for t in tasks) + " | "
             + " | ".join(f"{t}: score" for t in tasks) + " |", "|---|" + "---|" * (2 * len(tasks))]
    routers = list(views[0][1])
    for row in views[0][0]:
        kind = row.removeprefix("router: ")
        routed = [cell([v[1][kind][t] for v in views], n) if kind in routers else "—" for t in tasks]
        scores = [cell([v[0][row][t] for v in views], n) for t in tasks]
        lines.append(f"| {row} | " + " | ".join(routed) + " | " + " | ".join(scores) + " |")
    return lines + [""]


def mixed_table(runs: list[dict], tasks: list[str], n: int) -> list[str]:
    """Per router: each task's score in the mixed stream, and the share of its own pack's score it keeps."""
    lines = ["**One mixed stream** (every skill's test prompts in its template, shuffled, served at once):", "",
             "| router | " + " | ".join(f"{t}: score (kept)" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for kind in runs[0]["fusion"]["mixed_stream"]["routers"]:
        cells = []
        for t in tasks:
            scores = [r["fusion"]["mixed_stream"]["routers"][kind][t]["score"] for r in runs]
            own = [r["fusion"]["mixed_stream"]["own_pack"][t] for r in runs]
            kept = sum(scores) / sum(own) if sum(own) > 0 else float("nan")
            cells.append(f"{cell(scores, n)} ({100 * kept:.1f}%)")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines + [""]


def figure(runs: list[dict], path: Path) -> Path:
    """Own-pack routing per router and wording, pooled over the skills (seeds and items in the interval)."""
    spec = importlib.util.spec_from_file_location("results_page", HERE.parent / "make_results.py")
    page = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(page)  # docs/make_results.py: the project's grouped bars with interval whiskers
    cfg = runs[0]["config"]
    tasks = [cfg["skill"]["task"], *cfg["skill"]["fuse"]]
    n = int(cfg["skill"]["n_test"]) * len(tasks)
    groups = {}
    for wording in WORDINGS:
        views = [wording_view(r, wording)[1] for r in runs]
        groups[wording] = {kind: seed_item_interval([sum(v[kind][t] for t in tasks) / len(tasks) for v in views], n,
                                                    proportion=True) for kind in views[0]}
    return page.bar_figure(path, groups, "routed to its own pack", "Own-pack routing, five skills pooled, by wording")


def markdown(runs: list[dict], folder: Path, figure_path: Path = HERE / "content_routing.png") -> str:
    cfg = runs[0]["config"]
    tasks = [cfg["skill"]["task"], *cfg["skill"]["fuse"]]
    n = int(cfg["skill"]["n_test"])
    seeds = [r["config"]["seed"] for r in runs]
    minutes = [r["wall_seconds"] / 60 for r in runs]
    lines = [f"_Generated by `python docs/skillpacks/make_content.py {folder}` from {len(runs)} runs of "
             f"`experiment=skillpack_content` (seeds {seeds}; {min(minutes):.0f}-{max(minutes):.0f} min each on one "
             "core)._", "",
             f"Cells: mean [95% interval: {INTERVAL_METHOD}; {n} test prompts per task]. \"Routed to own\": the share "
             "of prompts whose largest router weight is on the task's own pack. \"(kept)\": the mixed-stream score "
             "as a share of the own pack's (oracle) score, summed over seeds.", "",
             f"![Own-pack routing by wording]({figure(runs, figure_path).name})", ""]
    for wording in WORDINGS:
        lines += wording_table(runs, wording, tasks, n)
    lines += mixed_table(runs, tasks, n)
    gate = [r["fusion"]["routers"].get("gate", {}).get("temperature_chosen_on_val", {}).get("temperature")
            for r in runs]
    if any(t is not None for t in gate):
        lines.append(f"The gate's temperature chosen on validation, per seed: {gate}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder with the jobs of experiment=skillpack_content")
    parser.add_argument("--page", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    runs = load_runs(args.runs)
    from make_results import replace_block  # the same block replacement as the budget tables

    args.page.write_text(replace_block(args.page.read_text(), "content", markdown(runs, args.runs), args.page))
    print(f"wrote {args.page} from {len(runs)} runs")


if __name__ == "__main__":
    main()
