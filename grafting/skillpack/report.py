"""Storage-vs-quality rows, markdown tables and the figure (GraftLLM-style) for SkillPack runs.

Storage is bytes on disk as a percentage of the dense float32 delta's pack; quality is the share
of the full fine-tune's gain over the base that a method keeps:
``(score_method − score_base) / (score_full − score_base)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def gain_kept(score: float, base: float, full: float) -> float:
    """Percentage of the fine-tune's gain kept (NaN when fine-tuning gained nothing)."""
    if not math.isfinite(full - base) or abs(full - base) < 1e-12:
        return float("nan")
    return 100.0 * (score - base) / (full - base)


def storage_row(method: str, nbytes: int, dense_bytes: int, score: float, base: float, full: float,
                **extra: Any) -> dict[str, Any]:
    """One table row: bytes, % of dense, score, % of the fine-tune's gain, plus ``extra`` columns."""
    return {"method": method, "bytes": int(nbytes), "pct_dense": 100.0 * nbytes / max(1, dense_bytes),
            "score": float(score), "pct_gain": gain_kept(score, base, full), **extra}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def storage_markdown(rows: Sequence[Mapping[str, Any]], base: float, full: float, title: str,
                     metrics: Sequence[str] = ()) -> str:
    """Markdown table of :func:`storage_row` rows, sorted by size, with the base and full scores above."""
    head = ["method", "bytes on disk", "% of dense", "score", "% of FT gain", *metrics]
    lines = [f"### {title}", "", f"base score {base:.3f}, full fine-tune score {full:.3f}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["bytes"]):
        cells = [r["method"], f"{r['bytes']:,}", f"{r['pct_dense']:.2f}", f"{r['score']:.3f}",
                 _fmt(r["pct_gain"]), *(_fmt(r.get(m, "")) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score_table(scores: Mapping[str, Mapping[str, float]], columns: Sequence[str], title: str) -> str:
    """Rows = settings, columns = tasks (or steps); cells = scores."""
    lines = [f"### {title}", "", "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row, cells in scores.items():
        lines.append(f"| {row} | " + " | ".join(_fmt(cells.get(c, float("nan"))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def storage_figure(rows_by_task: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str,
                   target: tuple[float, float] | None = (10.0, 95.0)) -> Path:
    """One panel per task: % of FT gain against % of dense bytes (log x); one colour per method, shared legend.

    ``target`` = (max % bytes, min % gain) shades the acceptance region.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters or CI
    import matplotlib.pyplot as plt

    tasks = list(rows_by_task)
    # one colour per method across panels: points at 100% overlap, so a legend beats labels
    methods = list(dict.fromkeys(r["method"].split(" ")[0] for rows in rows_by_task.values() for r in rows))
    colours = {m: plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")(i) for i, m in enumerate(methods)}
    n = max(1, len(tasks))
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n + 1.8, 4.2), dpi=110, squeeze=False)
    handles: dict[str, Any] = {}
    for ax, task in zip(axes[0], tasks, strict=False):
        rows = rows_by_task[task]
        for r in rows:
            x, y = max(r["pct_dense"], 1e-3), r["pct_gain"]
            if not math.isfinite(y):
                continue
            key = r["method"].split(" ")[0]
            handles[key] = ax.scatter([x], [y], s=70 if key.startswith("graftllm") else 40, zorder=3,
                                      color=colours[key], marker="*" if key.startswith("graftllm") else "o",
                                      edgecolors="black", linewidths=0.4, label=key)
        if target is not None:
            ax.axvline(target[0], color="grey", ls=":", lw=1)
            ax.axhline(target[1], color="grey", ls=":", lw=1)
            ax.fill_between([1e-3, target[0]], target[1], 200, color="green", alpha=0.07, zorder=0)
        ys = [r["pct_gain"] for r in rows if math.isfinite(r["pct_gain"])]
        ax.set_ylim(min([-5.0, *ys]) - 5, max([105.0, *ys]) + 5)
        ax.set_xlim(min([1.0, *(r["pct_dense"] for r in rows)]) / 2, 250)
        _gain_axis(ax, task, "bytes on disk, % of the dense delta (log)", "% of the full fine-tune's gain kept")
    return _save_figure(fig, handles, title, 4.8 * n + 1.8, path)


def _gain_axis(ax, task: str, xlabel: str, ylabel: str) -> None:
    """The shared look of a retained-gain panel: log bytes on x, the full fine-tune's 100% marked."""
    ax.axhline(100, color="black", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(task, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def _save_figure(fig, handles: dict, title: str, width: float, path: str | Path) -> Path:
    """One legend on the right for all panels, the title, then write and close the figure."""
    fig.legend(handles=list(handles.values()), loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / width, 1))
    path = Path(path)
    fig.savefig(path)
    import matplotlib.pyplot as plt  # the callers chose the Agg backend before making the figure

    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ equal byte budgets


def _cell(gain: float, pct: float) -> str:
    return "does not fit" if not math.isfinite(pct) else f"{_fmt(gain)} ({pct:.2f}%)"


def budget_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Methods × budgets; each cell is the % of the fine-tune's gain kept (and the pack's % of dense bytes)."""
    budgets = sorted({r["budget"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["method"], r["budget"]): _cell(r["pct_gain"], r["pct_dense"]) for r in rows}
    lines = [f"### {title}", "", "% of the full fine-tune's gain kept on test (pack bytes as % of the dense delta)",
             "", "| method | " + " | ".join(f"{100 * b:g}%" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    lines += ["| " + m + " | " + " | ".join(cells.get((m, b), "") for b in budgets) + " |" for m in methods]
    return "\n".join(lines) + "\n"


def summarize_budgets(runs: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]],
                      refs: Sequence[Mapping[str, tuple[float, float]]] | None = None) -> list[dict[str, Any]]:
    """Per (task, method, budget) over runs (seeds): mean and 95% interval of the retained gain.

    The interval is :func:`grafting.metrics.stats.seed_item_interval`: the spread over seeds plus, with
    ``refs``, each run's test-item noise. A score on ``n`` test items in [0, 1] has an item variance of at
    most ``s(1 - s)``, and the retained gain ``100 (s - base) / (full - base)`` scales it by
    ``(100 / (full - base))²`` (base and full taken as fixed). The interval is never narrower than the
    exact interval of the pack's pooled score carried through the same map (:func:`_with_exact_floor`).

    Args:
        runs: one ``results["budgets"]`` per run (task -> rows of :func:`budget_row`).
        refs: per run, task -> ``(base score, full fine-tune score)``, in the order of ``runs``.
    """
    from grafting.metrics.stats import seed_item_interval

    groups: dict[tuple[str, str, float], list[tuple[Mapping[str, Any], tuple[float, float] | None]]] = {}
    for i, run in enumerate(runs):
        for task, rows in run.items():
            for r in rows:
                ref = refs[i].get(task) if refs is not None else None
                groups.setdefault((task, r["method"], float(r["budget"])), []).append((r, ref))
    out = []
    for (task, method, budget), pairs in groups.items():
        rows = [r for r, _ in pairs]
        gains = [r["pct_gain"] for r in rows]
        n_items = [int(r.get("n") or 0) for r in rows]
        if refs is not None and all(ref is not None for _, ref in pairs) and all(n_items):
            item_vars = [_gain_item_var(r, ref) for r, ref in pairs]
            gain = _with_exact_floor(seed_item_interval(gains, n_items, item_vars), rows, [ref for _, ref in pairs])
        else:
            gain = seed_item_interval(gains)
        pct = [r["pct_dense"] for r in rows if r["pct_dense"] is not None and math.isfinite(r["pct_dense"])]
        out.append({"task": task, "method": method, "budget": budget, "n": len(rows), "gain": gain,
                    "pct_dense": sum(pct) / len(pct) if pct else float("nan"),
                    "fits": sum(r["bytes"] is not None for r in rows)})
    return out


def _with_exact_floor(gain: tuple[float, float, float], rows: Sequence[Mapping[str, Any]],
                      refs: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Widen a retained-gain interval to at least the exact (Clopper-Pearson) interval of the pack's pooled
    test score, mapped through ``100 (s - base) / (full - base)`` at the mean base and full: where every
    item of every seed agrees (a score of 1.000 or 0.000) the item variance is zero, but the test set is
    finite, so the interval is not."""
    from grafting.metrics.stats import seed_item_interval

    base = sum(b for b, _ in refs) / len(refs)
    full = sum(f for _, f in refs) / len(refs)
    scores = [float(r["score"]) for r in rows]
    if abs(full - base) < 1e-12 or not all(math.isfinite(x) for x in scores):
        return gain
    _, low, high = seed_item_interval(scores, [int(r["n"]) for r in rows], proportion=True)
    ends = sorted(100.0 * (x - base) / (full - base) for x in (low, high))
    return gain[0], min(gain[1], ends[0]), max(gain[2], ends[1])


def _gain_item_var(row: Mapping[str, Any], ref: tuple[float, float]) -> float:
    base, full = ref
    score, n = float(row["score"]), int(row.get("n") or 0)
    if not (math.isfinite(score) and n > 1 and abs(full - base) > 1e-12):
        return 0.0
    return (100.0 / (full - base)) ** 2 * score * (1 - score) * n / (n - 1)


def summary_markdown(summary: Sequence[Mapping[str, Any]], task: str) -> str:
    """Methods × budgets for one task: ``mean [low, high]`` of the retained gain over seeds, then the bytes used."""
    rows = [r for r in summary if r["task"] == task]
    budgets = sorted({r["budget"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {}
    for r in rows:
        mean, low, high = r["gain"]
        cell[(r["method"], r["budget"])] = ("does not fit" if not r["fits"] else
                                            f"{mean:.1f} [{low:.1f}, {high:.1f}], {r['pct_dense']:.2g}% (n={r['n']})")
    lines = ["| method | " + " | ".join(f"{100 * b:g}%" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    lines += ["| " + m + " | " + " | ".join(cell.get((m, b), "") for b in budgets) + " |" for m in methods]
    return "\n".join(lines) + "\n"


def budget_figure(rows_by_task: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str) -> Path:
    """One panel per task: % of the gain kept against the pack's % of dense bytes, one line per method.

    Rows are :func:`budget_row` rows (one run) or :func:`summarize_budgets` rows (mean with an interval).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(rows_by_task)
    n = max(1, len(tasks))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.8, 4.0), dpi=110, squeeze=False)
    handles: dict[str, Any] = {}
    methods = list(dict.fromkeys(r["method"] for rows in rows_by_task.values() for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for ax, task in zip(axes[0], tasks, strict=False):
        for method in methods:
            pts = sorted((r for r in rows_by_task[task] if r["method"] == method), key=lambda r: r["budget"])
            xs, ys, err = [], [], []
            for r in pts:
                gain = r["gain"] if "gain" in r else (r["pct_gain"],) * 3
                if math.isfinite(r["pct_dense"]) and math.isfinite(gain[0]):
                    xs.append(r["pct_dense"])
                    ys.append(gain[0])
                    err.append((gain[0] - gain[1], gain[2] - gain[0]))
            if xs:
                handles[method] = ax.errorbar(xs, ys, yerr=list(zip(*err, strict=True)), marker="o", ms=4, capsize=2,
                                              color=colours[method], label=method)
        _gain_axis(ax, task, "pack bytes, % of the dense delta (log)", "% of the full fine-tune's gain kept (test)")
    return _save_figure(fig, handles, title, 4.6 * n + 1.8, path)
