"""Turn a finished multirun into paper-style tables (mean and 95% interval over seeds) and figures.

Each job folder of a Hydra multirun holds ``results.json`` and ``.hydra/overrides.yaml``. Jobs
whose overrides differ only in ``seed`` form one row; every metric becomes ``mean [low, high]``, a
95% interval that counts both the seeds and the test items (``grafting.metrics.stats.score_interval``,
the project's one interval, as in docs/RESULTS.md). The tables
say which commit and package versions the jobs came from (``results.json``'s ``provenance``), and jobs
made with different ones are not averaged unless asked (``allow_mixed``).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from grafting.artifacts import read_results, write_json_atomic, write_text_atomic
from grafting.errors import ConfigError
from grafting.metrics.stats import format_interval, score_interval
from grafting.provenance import code_identity

IGNORED_KEYS = ("seed", "paths.log_dir", "overwrite", "resume")  # and every hydra.* key


def job_overrides(job_dir: Path) -> dict[str, str]:
    """A job's command-line overrides as ``{key: value}`` (``+``/``~`` stripped; seed and bookkeeping keys dropped)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (item.split("=", 1) for item in items or [] if "=" in item)
    stripped = ((k.lstrip("+~"), v) for k, v in pairs)
    return {k: v for k, v in stripped if k not in IGNORED_KEYS and not k.startswith("hydra.")}


def finished_jobs(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(job folder, results)`` of every finished job under ``sweep_dir``, in path order."""
    return [(path.parent, read_results(path.parent)) for path in sorted(Path(sweep_dir).rglob("results.json"))]


def _job_name(job_dir: Path, sweep_dir: Path) -> str:
    return str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else "."


def survey(sweep_dir: str | Path) -> str:
    """What the runs under ``sweep_dir`` hold, in words: how many results, which stages and models."""
    loaded = finished_jobs(Path(sweep_dir))
    if not loaded:
        jobs = sum(1 for p in Path(sweep_dir).rglob("overrides.yaml"))
        return f"no results.json under {sweep_dir} ({jobs} job folder(s) without results: unfinished or failed?)"
    stages = Counter(str(res.get("stage", "?")) for _, res in loaded)
    models = Counter(m for _, res in loaded for m in res.get("models") or {})
    held = ", ".join(f"{m} ({n} jobs)" for m, n in models.items()) or "none (no per-model scores)"
    return (f"{len(loaded)} results.json under {sweep_dir}; stages: "
            + ", ".join(f"{s} ({n} jobs)" for s, n in stages.items()) + f"; models: {held}")


def models_in(sweep_dir: str | Path) -> list[str]:
    """Every model some run under ``sweep_dir`` has scores for, in the order the runs list them."""
    return list(dict.fromkeys(m for _, res in finished_jobs(Path(sweep_dir)) for m in res.get("models") or {}))


def collect(sweep_dir: str | Path, model: str = "Grafted") -> list[dict[str, Any]]:
    """One record per finished job: its overrides (seed removed), seed, ``model``'s metrics and code identity."""
    sweep_dir = Path(sweep_dir)
    records = []
    for job_dir, results in finished_jobs(sweep_dir):
        models = results.get("models") or {}
        if model not in models:
            continue
        numbers = {k: v for k, v in models[model].items() if isinstance(v, (int, float))}
        # the item counts and variances feed the interval; they are not metrics of their own
        metrics = {k: v for k, v in numbers.items()
                   if not (k in ("n", "val_n") or k.endswith("_n") or k.endswith("_item_var"))}
        seed = (results.get("config") or {}).get("seed")
        records.append({"job": _job_name(job_dir, sweep_dir), "overrides": job_overrides(job_dir), "seed": seed,
                        "metrics": metrics, "scores": numbers, "code": code_identity(results.get("provenance"))})
    if not records:
        raise ConfigError("aggregate_model", f"no run has scores for model {model!r}: {survey(sweep_dir)}. "
                                             "aggregate_model=<name> chooses one (null: every model).")
    # Rows are labelled by the overrides that vary across the sweep; constant ones say nothing.
    keys = {k for r in records for k in r["overrides"]}
    varying = {k for k in keys if len({r["overrides"].get(k) for r in records}) > 1}
    for r in records:
        r["overrides"] = {k: v for k, v in r["overrides"].items() if k in varying}
    return records


def code_differences(records: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``{field: {value: [jobs]}}`` for every commit / dirty / version field on which the jobs disagree."""
    values: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    fields = {k for r in records for k in r["code"]}
    for rec in records:
        for key in fields:
            value = rec["code"].get(key)
            values[key]["unknown" if value is None else str(value)].append(rec["job"])
    return {k: dict(v) for k, v in sorted(values.items()) if len(v) > 1}


def check_same_code(records: list[dict[str, Any]], sweep_dir: str | Path, allow_mixed: bool = False) -> dict:
    """Refuse (``ConfigError`` naming ``allow_mixed``) to average jobs made with other code or versions."""
    diffs = code_differences(records)
    if diffs and not allow_mixed:
        lines = [f"  {k}: " + "; ".join(f"{v} (jobs {', '.join(jobs)})" for v, jobs in values.items())
                 for k, values in diffs.items()]
        raise ConfigError("allow_mixed", f"the runs under {sweep_dir} were made with different code or package "
                                         "versions:\n" + "\n".join(lines) + "\nRe-run the odd jobs with the same "
                                         "code, or pass allow_mixed=true to average them anyway.")
    return diffs


def _describe_code(records: list[dict[str, Any]]) -> dict[str, str]:
    """``{field: value}`` over ``records``, distinct values joined by ``;`` (one value when they agree)."""
    fields = {k: None for r in records for k in r["code"]}
    return {k: ";".join(dict.fromkeys(str(r["code"].get(k)) for r in records)) for k in fields}


def _row_key(overrides: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "(defaults)"


Summary = dict[str, dict[str, tuple[float, float, float, int]]]


def summarise(records: list[dict[str, Any]]) -> Summary:
    """``{row: {metric: (mean, low, high, n)}}``: the mean over seeds and its 95% interval.

    The interval is ``grafting.metrics.stats.score_interval`` (seeds and test items; docs/RESULTS.md uses
    the same). NaNs are skipped.
    """
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        grouped[_row_key(rec["overrides"])].append(rec)
    out: Summary = {}
    for row, recs in grouped.items():
        metrics = dict.fromkeys(m for r in recs for m, v in r["metrics"].items() if not math.isnan(v))
        out[row] = {m: (*score_interval(_scores(recs, m), m), sum(1 for r in recs if m in r["metrics"]
                                                                  and not math.isnan(r["metrics"][m])))
                    for m in metrics}
    return out


def _scores(records: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The score dicts of the records that have ``metric`` (what :func:`score_interval` reads)."""
    return [r.get("scores", r["metrics"]) for r in records
            if metric in r["metrics"] and not math.isnan(r["metrics"][metric])]


def markdown_table(summary: Summary, metrics: list[str]) -> str:
    """Cells are ``mean [low, high]`` (95% interval over seeds and test items)."""
    lines = ["| run | " + " | ".join(metrics) + " | seeds |", "|---" * (len(metrics) + 2) + "|"]
    for row, values in summary.items():
        cells = [format_interval(values[m][:3]) if m in values else "n/a" for m in metrics]
        seeds = max((v[3] for v in values.values()), default=0)
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"


def csv_table(summary: Summary, metrics: list[str],
              records: list[dict[str, Any]] | None = None, model: str | None = None, header: bool = True) -> str:
    """One line per row; with ``records``, the commit, dirty flag and versions its jobs were made with."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow((["model"] if model else []) + ["run"] + [f"{m}_{s}" for m in metrics for s in ("mean", "low", "high")]
                        + ["seeds"] + (["commit", "dirty", "versions"] if records is not None else []))
    for row, values in summary.items():
        cells = [f"{values[m][i]:.6g}" if m in values else "" for m in metrics for i in (0, 1, 2)]
        code = []
        if records is not None:
            described = _describe_code([r for r in records if _row_key(r["overrides"]) == row])
            versions = " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in described.items() if k.startswith("versions."))
            code = [described.get("git.commit", "None"), described.get("git.dirty", "None"), versions]
        writer.writerow(([model] if model else []) + [row, *cells, max((v[3] for v in values.values()), default=0)]
                        + code)
    return out.getvalue()


def plot_axis(records: list[dict[str, Any]], axis: str, metrics: list[str], path: Path) -> Path | None:
    """Metric vs one swept axis (mean and 95% interval over seeds and items), saved as PNG; None if not plottable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({r["overrides"].get(axis) for r in records if axis in r["overrides"]},
                    key=lambda v: (not _is_number(v), float(v) if _is_number(v) else v))
    if len(values) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for metric in metrics:
        stats = [score_interval(_scores([r for r in records if r["overrides"].get(axis) == value], metric), metric)
                 for value in values]
        means = [m for m, _, _ in stats]
        spread = [[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]]
        ax.errorbar(range(len(values)), means, yerr=spread, marker="o", capsize=3, label=metric)
    ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(axis)
    ax.set_ylabel("score (mean, 95% interval over seeds)")
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


def provenance_markdown(records: list[dict[str, Any]], diffs: dict[str, dict[str, list[str]]]) -> str:
    """What code and versions the runs came from (and, when mixed, which jobs differ)."""
    described = _describe_code(records)
    versions = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in described.items() if k.startswith("versions."))
    dirty = {"True": " (uncommitted changes)", "False": " (clean)"}.get(described.get("git.dirty", ""), "")
    text = f"Runs made with commit {described.get('git.commit', 'None')}{dirty}; {versions or 'versions unknown'}.\n"
    if diffs:
        text += "\n**Mixed code or versions (allow_mixed=true):**\n\n" + "".join(
            f"- {k}: " + "; ".join(f"{v} (jobs {', '.join(jobs)})" for v, jobs in values.items()) + "\n"
            for k, values in diffs.items())
    return text


def aggregate(sweep_dir: str | Path, out_dir: str | Path | None = None, model: str | None = None,
              metrics: tuple[str, ...] = ("f_H", "f_S", "fact", "P", "MLM", "ppl_ref", "kl_host"),
              allow_mixed: bool = False) -> dict[str, Any]:
    """Write ``aggregate.{md,csv,json}`` and one PNG per swept axis and model into ``out_dir``.

    Every model the runs hold is tabulated, or only ``model`` (then the files are ``aggregate_<model>.*``).
    Figures of the grafted model are ``<axis>.png``, of another ``<axis>_<model>.png``. Jobs made with
    another commit, dirty state or package versions are refused unless ``allow_mixed``.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir or sweep_dir)
    models = [model] if model else models_in(sweep_dir)
    if not models:
        raise ConfigError("aggregate", f"nothing to tabulate: {survey(sweep_dir)}.")
    per_model = {m: collect(sweep_dir, m) for m in models}
    jobs = list({r["job"]: r for recs in per_model.values() for r in recs}.values())
    diffs = check_same_code(jobs, sweep_dir, allow_mixed)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"_{model}" if model else ""
    every_metric = [x for x in metrics if any(x in r["metrics"] for recs in per_model.values() for r in recs)]
    tables, csv_text, summaries, figures, report = [], "", {}, [], {}
    for m, records in per_model.items():
        present = [x for x in metrics if any(x in r["metrics"] for r in records)]
        summary = summaries[m] = summarise(records)
        tables.append(f"**{m}** over {len(records)} jobs in {sweep_dir}\n\n{markdown_table(summary, present)}")
        csv_text += csv_table(summary, every_metric, records, m, header=not csv_text)
        fig_suffix = "" if m == "Grafted" else f"_{m}"
        axes = sorted({k for r in records for k in r["overrides"]})
        figures += [str(p) for axis in axes
                    if (p := plot_axis(records, axis, present[:3], out_dir / f"{axis.replace('/', '_')}{fig_suffix}.png"))]
        report[m] = {"jobs": len(records), "rows": {row: {k: {"mean": v[0], "low": v[1], "high": v[2], "n": v[3]}
                                                          for k, v in values.items()}
                                                    for row, values in summary.items()}}
    markdown = "\n".join(tables) + "\n" + provenance_markdown(jobs, diffs)
    files = [out_dir / f"aggregate{suffix}.{ext}" for ext in ("md", "csv", "json")]
    write_text_atomic(files[0], markdown)
    write_text_atomic(files[1], csv_text)
    write_json_atomic(files[2], {"sweep": str(sweep_dir), "models": report, "code": _describe_code(jobs),
                                 "mixed": diffs, "jobs": {r["job"]: r["code"] for r in jobs}})
    return {"table": markdown, "summary": summaries, "figures": figures, "jobs": len(jobs),
            "files": [str(f) for f in files], "mixed": diffs}
