"""Tables of docs/RESULTS.md: the paper's numbers beside ours, from the replication's multiruns.

    python docs/make_results.py [--runs outputs/replication]

Reads each ablation's multirun (written by docs/replicate.sh), computes mean ± std over seeds for
the grafted model (and the Tuned / Vanilla references of the same jobs), copies the figures into
docs/figures/ and rewrites the part of docs/RESULTS.md between the ``tables`` markers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from grafting.reporting.aggregate import collect, summarise

DOCS = Path(__file__).resolve().parent
START, END = "<!-- tables:start -->", "<!-- tables:end -->"
METRICS = ["f_H", "f_S", "fact", "P", "MLM", "ppl_ref", "kl_host"]
PAPER_METRICS = ["f_H", "f_S", "fact", "P", "MLM"]

# The paper's Tables 1-10 (pythia-70m donor into pythia-70m-deduped unless said; one run each).
# Per ablation: (paper column -> our sweep row, or None where we have no counterpart), paper values.
ABLATIONS = {
    "loss_ablation": {
        "title": "Loss: residual vs logits (paper Tables 1-2)",
        "columns": {"residual": "loss=residual", "logits": "loss=logits"},
        "paper": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "residual": [0.000, 0.645, 0.233, 1.236, 0.022],
                  "logits": [0.000, 0.012, 0.046, 1.370, 0.012], "Vanilla": [0.000, 0.000, 0.000, 1.230, 0.749]},
    },
    "dest_layer": {
        "title": "Destination layer (paper Tables 3-4: L1..L5 of pythia-70m's 6; ours: 0..3 of 4, donor block 2)",
        # The paper does not say which donor block it tuned here, so no column is matched to ours.
        "columns": {"L1": None, "L2": None, "L3": None, "L4": None, "L5": None},
        "paper": {"L1": [0.000, 0.000, 0.000, 1.006, 0.000], "L2": [0.000, 0.001, 0.038, 1.290, 0.121],
                  "L3": [0.000, 0.000, 0.000, 1.301, 0.054], "L4": [0.000, 0.723, 0.233, 1.281, 0.042],
                  "L5": [0.000, 0.000, 0.000, 1.055, 0.010]},
    },
    "align_data": {
        "title": "Alignment data: Mod / Mixed / general text (paper Tables 5-6; our general text is the built-in "
                 "corpus, theirs FineWeb)",
        "columns": {"Mod": "dataloader=mod", "Mixed": "dataloader=mixed", "Fineweb": "dataloader=text"},
        "paper": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "Mod": [0.000, 0.910, 0.233, 1.343, 0.029],
                  "Mixed": [0.000, 0.706, 0.233, 1.305, 0.104], "Fineweb": [0.000, 0.639, 0.233, 1.337, 0.024],
                  "Vanilla": [0.000, 0.000, 0.000, 1.231, 0.749]},
    },
    "strategy": {
        "title": "Strategy: original vs direct (paper Tables 7-8)",
        "columns": {"original": "graft.strategy=original", "direct": "graft.strategy=direct"},
        "paper": {"Tuned": [1.000, 1.000, 0.227, 1.284, 0.359], "original": [0.000, 0.706, 0.233, 1.305, 0.104],
                  "direct": [0.000, 0.000, 0.000, 1.087, 0.138], "Vanilla": [0.000, 0.000, 0.000, 1.231, 0.749]},
    },
    "host_size": {
        "title": "Host size (paper Tables 9-10: 70m / 160m / 410m hosts; ours: tiny-host d=128 / -m d=192 / "
                 "-l d=256 with 6 layers)",
        "columns": {"70m": "host=tiny-host", "160m": "host=tiny-host-m", "410m": "host=tiny-host-l"},
        "paper": {"Tuned": [1.000, 1.000, 0.229, 1.222, 0.619], "70m": [0.000, 0.645, 0.233, 1.236, 0.022],
                  "160m": [0.000, 0.245, 0.027, 1.271, 0.111], "410m": [0.000, 0.000, 0.000, 1.338, 0.000],
                  "Vanilla": [0.000, 0.000, 0.002, 1.198, 0.722]},
    },
}


def _cell(stats: tuple[float, float, int] | None) -> str:
    return "n/a" if stats is None else f"{stats[0]:.3f} ± {stats[1]:.3f}"


def _pooled(sweep: Path, model: str) -> dict[str, tuple[float, float, int]]:
    """A reference model's metrics over the sweep's seeds (one value per seed: the jobs of a seed agree)."""
    per_seed: dict[int, dict[str, float]] = {}
    for rec in collect(sweep, model):
        per_seed.setdefault(rec["seed"], rec["metrics"])
    out = {}
    for m in METRICS:
        values = [v[m] for v in per_seed.values() if m in v and v[m] == v[m]]
        if values:
            out[m] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
    return out


def ablation_markdown(name: str, spec: dict, sweep: Path) -> str:
    grafted = summarise(collect(sweep, "Grafted"))
    ours = {"Tuned": _pooled(sweep, "Tuned"), "Vanilla": _pooled(sweep, "Vanilla")}
    for column, row in spec["columns"].items():
        if row is not None:
            ours[column] = grafted.get(row, {})
    columns = list(spec["paper"])
    seeds = max(v[2] for v in next(iter(grafted.values())).values())
    lines = [f"### {spec['title']}", "", f"Ours: mean ± std over {seeds} seeds of the jobs in `{sweep}` "
             f"(`python evaluate.py aggregate={sweep}` prints the grafted rows; Tuned and Vanilla are the "
             "reference models of the same jobs).", "",
             "| metric | | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    has_ours = any(row is not None for row in spec["columns"].values())
    for m in METRICS:
        if m in PAPER_METRICS:
            i = PAPER_METRICS.index(m)
            lines.append(f"| {m} | paper | " + " | ".join(f"{spec['paper'][c][i]:.3f}" for c in columns) + " |")
        if has_ours:
                lines.append(f"| {m} | ours | " + " | ".join(_cell(ours.get(c, {}).get(m)) if c in ours else "—"
                                                         for c in columns) + " |")
    if name == "dest_layer":  # our ladder has other indices than the paper's: the whole sweep, by our dest
        rows = sorted(grafted, key=lambda r: int(r.split("=")[1]))
        lines += ["", "Ours, every destination (donor block 2 fine-tuned; `graft.dest=j` replaces host block j):", "",
                  "| graft.dest | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        lines += [f"| {r.split('=')[1]} | " + " | ".join(_cell(grafted[r].get(m)) for m in METRICS) + " |" for r in rows]
    figures = sorted(p for p in sweep.glob("*.png") if "_" not in p.stem or p.stem.startswith("graft"))
    target = DOCS / "figures"
    target.mkdir(exist_ok=True)
    for fig in figures:
        shutil.copyfile(fig, target / f"{name}_{fig.name}")
        lines += ["", f"![{name}: {fig.stem}](figures/{name}_{fig.name})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/replication"))
    args = parser.parse_args()
    parts = [ablation_markdown(name, spec, args.runs / name) for name, spec in ABLATIONS.items()
             if (args.runs / name / "aggregate.md").is_file()]  # finished sweeps only
    results = DOCS / "RESULTS.md"
    text = results.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{results}: missing the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    results.write_text(head + START + "\n\n" + "\n".join(parts) + "\n" + END + tail)
    print(f"rewrote the tables of {results} ({len(parts)} ablations)")


if __name__ == "__main__":
    main()
