"""Turn a finished multirun into paper-style tables (mean ± std over seeds) and figures.

Each job folder of a Hydra multirun holds ``results.json`` and ``.hydra/overrides.yaml``. Jobs
whose overrides differ only in ``seed`` form one row; every metric becomes ``mean ± std``.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from grafting.artifacts import write_text_atomic
from grafting.run_context import read_results

IGNORED_KEYS = ("seed", "paths.log_dir", "hydra.run.dir", "hydra.sweep.dir", "overwrite")


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (item.split("=", 1) for item in items or [] if "=" in item)
    return {k.lstrip("+~"): v for k, v in pairs if k.lstrip("+~") not in IGNORED_KEYS}


def collect(sweep_dir: str | Path, model: str = "Grafted") -> list[dict[str, Any]]:
    """One record per finished job: its overrides (seed removed), seed and ``model``'s metrics."""
    records = []
    for results_path in sorted(Path(sweep_dir).rglob("results.json")):
        job_dir = results_path.parent
        results = read_results(job_dir)
        models = results.get("models", {})
        if model not in models:
            continue
        metrics = {k: v for k, v in models[model].items() if isinstance(v, (int, float)) and k != "n"}
        seed = (results.get("config") or {}).get("seed")
        records.append({"job": job_dir.name, "overrides": _overrides(job_dir), "seed": seed, "metrics": metrics})
    if not records:
        raise FileNotFoundError(f"no results.json with model {model!r} under {sweep_dir}")
    # Rows are labelled by the overrides that vary across the sweep; constant ones say nothing.
    keys = {k for r in records for k in r["overrides"]}
    varying = {k for k in keys if len({r["overrides"].get(k) for r in records}) > 1}
    for r in records:
        r["overrides"] = {k: v for k, v in r["overrides"].items() if k in varying}
    return records


def _row_key(overrides: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "(defaults)"


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{row: {metric: (mean, std, n)}}``; std is the sample std (0 for a single seed); NaNs are skipped."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        for metric, value in rec["metrics"].items():
            if not math.isnan(value):
                grouped[_row_key(rec["overrides"])][metric].append(float(value))
    return {row: {m: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                  for m, v in metrics.items()} for row, metrics in grouped.items()}


def markdown_table(summary: dict[str, dict[str, tuple[float, float, int]]], metrics: list[str]) -> str:
    lines = ["| run | " + " | ".join(metrics) + " | seeds |", "|---" * (len(metrics) + 2) + "|"]
    for row, values in summary.items():
        cells = [f"{values[m][0]:.3f} ± {values[m][1]:.3f}" if m in values else "n/a" for m in metrics]
        seeds = max((v[2] for v in values.values()), default=0)
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"


def csv_table(summary: dict[str, dict[str, tuple[float, float, int]]], metrics: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")] + ["seeds"])
    for row, values in summary.items():
        cells = [f"{values[m][i]:.6g}" if m in values else "" for m in metrics for i in (0, 1)]
        writer.writerow([row, *cells, max((v[2] for v in values.values()), default=0)])
    return out.getvalue()


def plot_axis(records: list[dict[str, Any]], axis: str, metrics: list[str], path: Path) -> Path | None:
    """Metric vs one swept axis (mean ± std over everything else), saved as PNG; None if not plottable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({r["overrides"].get(axis) for r in records if axis in r["overrides"]},
                    key=lambda v: (not _is_number(v), float(v) if _is_number(v) else v))
    if len(values) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for metric in metrics:
        means, stds = [], []
        for value in values:
            points = [r["metrics"][metric] for r in records
                      if r["overrides"].get(axis) == value and metric in r["metrics"]
                      and not math.isnan(r["metrics"][metric])]
            means.append(statistics.fmean(points) if points else float("nan"))
            stds.append(statistics.stdev(points) if len(points) > 1 else 0.0)
        ax.errorbar(range(len(values)), means, yerr=stds, marker="o", capsize=3, label=metric)
    ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(axis)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def aggregate(sweep_dir: str | Path, out_dir: str | Path | None = None, model: str = "Grafted",
              metrics: tuple[str, ...] = ("f_H", "f_S", "fact", "P", "MLM", "ppl_ref", "kl_host")) -> dict[str, Any]:
    """Write ``aggregate.md``, ``aggregate.csv`` and one PNG per swept axis into ``out_dir``.

    For another model than the grafted one, the names carry it (``aggregate_Tuned.md``, ``loss_Tuned.png``),
    so the grafted model's tables are never replaced.
    """
    suffix = "" if model == "Grafted" else f"_{model}"
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir or sweep_dir)
    records = collect(sweep_dir, model)
    present = [m for m in metrics if any(m in r["metrics"] for r in records)]
    summary = summarise(records)
    table = markdown_table(summary, present)
    write_text_atomic(out_dir / f"aggregate{suffix}.md", f"**{model}** over {len(records)} jobs in {sweep_dir}\n\n{table}")
    write_text_atomic(out_dir / f"aggregate{suffix}.csv", csv_table(summary, present))
    axes = sorted({k for r in records for k in r["overrides"]})
    figures = [str(p) for axis in axes
               if (p := plot_axis(records, axis, present[:3], out_dir / f"{axis.replace('/', '_')}{suffix}.png"))]
    files = [str(out_dir / f"aggregate{suffix}.{ext}") for ext in ("md", "csv")]
    return {"table": table, "summary": summary, "figures": figures, "jobs": len(records), "files": files}
