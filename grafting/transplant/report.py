"""Transplant sweep reporting: per-run records -> summary rows -> markdown tables and a figure.

A *record* is one evaluated condition (one selection, K, alpha and, for the random control, seed). Records
of the same (alpha, selection, K) are summarised into one *row*: mean and sample std over the control seeds
of the task scores, TIR, Recovery and KL. An undefined TIR / Recovery (zero target, zero gap) stays
undefined through the summary and is printed as its reason: nothing is ever divided by zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from grafting.transplant.metrics import MetricResult, recovery, tir

__all__ = ["SELECTIONS", "TASK_KEYS", "format_cell", "plot_sweep", "record", "summarize", "summary_rows",
           "sweep_markdown", "top_vs_random"]

SELECTIONS = ("top", "random", "bottom", "all")
TASK_KEYS = ("f_H", "f_S", "fact")


def _result_dict(res: MetricResult) -> dict[str, Any]:
    return {"value": res.value, "reason": res.reason}


def record(selection: str, k: int, k_effective: int, alpha: float, seed: int | None, modules: Sequence[str],
           scores: dict[str, float], kl: float, target: dict[str, float], source: dict[str, float]) -> dict:
    """One evaluated condition, with TIR and Recovery for every task metric (undefined ones keep a reason)."""
    return {
        "selection": selection, "k": k, "k_effective": k_effective, "alpha": alpha, "seed": seed,
        "modules": list(modules), "scores": {m: scores[m] for m in TASK_KEYS}, "kl": kl,
        "tir": {m: _result_dict(tir(scores[m], target[m])) for m in TASK_KEYS},
        "recovery": {m: _result_dict(recovery(scores[m], target[m], source[m])) for m in TASK_KEYS},
    }


def summarize(values: Iterable[float | None], reasons: Iterable[str | None] = ()) -> dict[str, Any]:
    """Mean, sample std (0 for one value) and count of the defined values; ``reason`` when some are not.

    Args:
        values: numbers, ``None`` for an undefined metric.
        reasons: the matching ``MetricResult.reason`` strings (only the first non-empty one is kept).
    """
    values = list(values)
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    reason = next((r for r in reasons if r), None)
    if not defined:
        return {"mean": None, "std": None, "n": 0, "reason": reason or "no runs"}
    std = statistics.stdev(defined) if len(defined) > 1 else 0.0
    partial = f"{len(values) - len(defined)} of {len(values)} undefined ({reason})" if len(defined) < len(values) \
        else None
    return {"mean": statistics.fmean(defined), "std": std, "n": len(defined), "reason": partial}


def summary_rows(records: Sequence[dict], metric: str) -> list[dict[str, Any]]:
    """One row per (alpha, selection, K), in first-seen order; ``metric`` picks the TIR/Recovery/score columns."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["alpha"], rec["selection"], rec["k"]), []).append(rec)
    rows = []
    for (alpha, selection, k), recs in groups.items():
        row: dict[str, Any] = {"alpha": alpha, "selection": selection, "k": k,
                               "k_effective": recs[0]["k_effective"], "n_runs": len(recs),
                               "seeds": [r["seed"] for r in recs if r["seed"] is not None]}
        for name in ("tir", "recovery"):
            row[name] = summarize([r[name][metric]["value"] for r in recs],
                                  [r[name][metric]["reason"] for r in recs])
        row["score"] = summarize([r["scores"][metric] for r in recs])
        for m in TASK_KEYS:
            row[m] = summarize([r["scores"][m] for r in recs])
        row["kl"] = summarize([r["kl"] for r in recs])
        rows.append(row)
    return rows


def format_cell(stat: dict[str, Any], digits: int = 3) -> str:
    """``mean``, ``mean ± std`` for several runs, or ``— (reason)`` when undefined."""
    if stat["mean"] is None:
        return f"— ({stat['reason']})"
    text = f"{stat['mean']:.{digits}f}"
    if stat["n"] > 1:
        text += f" ± {stat['std']:.{digits}f}"
    if stat.get("reason"):
        text += f" ({stat['reason']})"
    return text


def _lookup(rows: Sequence[dict], alpha: float, selection: str, k: int | None = None) -> dict | None:
    for row in rows:
        if row["alpha"] == alpha and row["selection"] == selection and (k is None or row["k"] == k):
            return row
    return None


def _k_label(row: dict) -> str:
    return str(row["k"]) if row["k"] == row["k_effective"] else f"{row['k']} (capped to {row['k_effective']})"


def _table(rows: Sequence[dict], alpha: float, ks: Sequence[int], column: str, title: str, n_seeds: int,
           n_all: int, compare: bool = False) -> list[str]:
    head = ["K", "top", f"random (mean ± std, {n_seeds} seeds)", "bottom", f"all ({n_all} modules)"]
    if compare:
        head.append("top − random")
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    all_row = _lookup(rows, alpha, "all")
    for k in ks:
        top = _lookup(rows, alpha, "top", k)
        cells = [_k_label(top) if top else str(k)]
        for sel in ("top", "random", "bottom"):
            row = _lookup(rows, alpha, sel, k)
            cells.append(format_cell(row[column]) if row else "n/a")
        cells.append(format_cell(all_row[column]) if all_row else "n/a")
        if compare:
            rnd = _lookup(rows, alpha, "random", k)
            if top and rnd and top[column]["mean"] is not None and rnd[column]["mean"] is not None:
                cells.append(f"{top[column]['mean'] - rnd[column]['mean']:+.3f}")
            else:
                cells.append("n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _all_metrics_table(rows: Sequence[dict], alpha: float, ks: Sequence[int], n_all: Any) -> list[str]:
    """Mean f_H / f_S / fact per selection (random: mean over seeds), so the other metrics are visible too."""
    head = ["K", "top", "random (mean)", "bottom", f"all ({n_all} modules)"]
    lines = ["**" + " / ".join(TASK_KEYS) + " after transplant**", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]

    def cell(row: dict | None) -> str:
        return "/".join(f"{row[m]['mean']:.2f}" for m in TASK_KEYS) if row else "n/a"

    for k in ks:
        top = _lookup(rows, alpha, "top", k)
        cells = [_k_label(top) if top else str(k)]
        cells += [cell(_lookup(rows, alpha, sel, k)) for sel in ("top", "random", "bottom")]
        cells.append(cell(_lookup(rows, alpha, "all")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def top_vs_random(rows: Sequence[dict], alpha: float) -> dict[str, list[int]]:
    """Ks where top-K's mean score is above / equal to / below random-K's mean (``equal`` within 1e-9)."""
    out: dict[str, list[int]] = {"above": [], "equal": [], "below": []}
    for top in (r for r in rows if r["alpha"] == alpha and r["selection"] == "top"):
        rnd = _lookup(rows, alpha, "random", top["k"])
        if rnd is None:
            continue
        diff = top["score"]["mean"] - rnd["score"]["mean"]
        out["above" if diff > 1e-9 else "below" if diff < -1e-9 else "equal"].append(top["k"])
    return out


def sweep_markdown(rows: Sequence[dict], metric: str, target: dict[str, float], source: dict[str, float],
                   meta: dict[str, Any]) -> str:
    """Markdown report: reference scores, then per alpha the score, Recovery, TIR and KL-vs-K tables.

    Args:
        rows: ``summary_rows`` output.
        metric: the task metric behind TIR / Recovery (``f_H``, ``f_S`` or ``fact``).
        target, source: the untouched models' task scores.
        meta: ``eval_points``, ``n_candidates``, ``score`` (scorer), ``ranked`` (best first), ``source`` (what).
    """
    ks = list(dict.fromkeys(r["k"] for r in rows if r["selection"] == "top"))
    alphas = list(dict.fromkeys(r["alpha"] for r in rows))
    n_seeds = max((r["n_runs"] for r in rows if r["selection"] == "random"), default=0)
    gap = source[metric] - target[metric]
    lines = [
        "## Training-free transplantation: task score vs K",
        "",
        f"Source: {meta.get('source')}. Target: {meta.get('target')}. {meta.get('n_candidates')} candidate "
        f"modules, ranked by `{meta.get('score')}` of last-token mean |activation|; "
        f"{meta.get('eval_points')} test points. TIR and Recovery use `{metric}` "
        f"(target {target[metric]:.3f}, source {source[metric]:.3f}, gap {gap:+.3f}).",
        "",
        "| model | f_H | f_S | fact |",
        "|---|---|---|---|",
        *(f"| {name} | " + " | ".join(f"{s[m]:.3f}" for m in TASK_KEYS) + " |"
          for name, s in (("target", target), ("source", source))),
        "",
        "Ranking (top first): " + ", ".join(f"`{n}`" for n in meta.get("ranked", [])),
        "",
    ]
    n_all = meta.get("n_candidates", "all")
    for alpha in alphas:
        verdict = top_vs_random(rows, alpha)
        lines += [f"### α = {alpha}", "",
                  f"top-K vs random-K mean on {metric}: above at K = {verdict['above'] or 'none'}, equal at "
                  f"K = {verdict['equal'] or 'none'}, below at K = {verdict['below'] or 'none'}.", ""]
        lines += _table(rows, alpha, ks, "score", f"{metric} after transplant", n_seeds, n_all, compare=True)
        lines += _table(rows, alpha, ks, "recovery", f"Recovery ({metric})", n_seeds, n_all, compare=True)
        lines += _table(rows, alpha, ks, "tir", f"TIR ({metric})", n_seeds, n_all)
        lines += _all_metrics_table(rows, alpha, ks, n_all)
        lines += _table(rows, alpha, ks, "kl", "KL(target ‖ transplanted) on general text, nats/token",
                        n_seeds, n_all)
    return "\n".join(lines)


def plot_sweep(rows: Sequence[dict], metric: str, target: dict[str, float], source: dict[str, float],
               path: str | Path) -> Path:
    """PNG: per alpha, the task score vs K (one line per selection) and the KL vs K."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    alphas = list(dict.fromkeys(r["alpha"] for r in rows))
    fig, axes = plt.subplots(len(alphas), 2, figsize=(11, 4 * len(alphas)), squeeze=False)
    styles = {"top": ("C0", "o"), "random": ("C1", "s"), "bottom": ("C2", "v")}
    for (ax_s, ax_kl), alpha in zip(axes, alphas, strict=True):
        for sel, (color, marker) in styles.items():
            sel_rows = [r for r in rows if r["alpha"] == alpha and r["selection"] == sel]
            if not sel_rows:
                continue
            ks = [r["k_effective"] for r in sel_rows]
            for ax, col in ((ax_s, "score"), (ax_kl, "kl")):
                means = [r[col]["mean"] if r[col]["mean"] is not None else math.nan for r in sel_rows]
                stds = [r[col]["std"] or 0.0 for r in sel_rows]
                label = f"{sel}-K" + (" (mean ± std)" if sel == "random" else "")
                ax.errorbar(ks, means, yerr=stds if sel == "random" else None, color=color, marker=marker,
                            capsize=3, label=label)
        all_row = _lookup(rows, alpha, "all")
        if all_row is not None:
            ax_s.axhline(all_row["score"]["mean"], color="C3", ls="--", label=f"all ({all_row['k_effective']})")
            ax_kl.axhline(all_row["kl"]["mean"], color="C3", ls="--", label=f"all ({all_row['k_effective']})")
        ax_s.axhline(target[metric], color="grey", ls=":", label=f"target ({target[metric]:.2f})")
        ax_s.axhline(source[metric], color="black", ls=":", label=f"source ({source[metric]:.2f})")
        ks_all = sorted({r["k_effective"] for r in rows if r["alpha"] == alpha})
        for ax in (ax_s, ax_kl):
            ax.set_xscale("log", base=2)  # K doubles along the sweep
            ax.set_xticks(ks_all, [str(k) for k in ks_all])
        ax_s.set_ylim(-0.03, 1.03)  # task scores are fractions
        ax_s.set(xlabel="K (modules transplanted)", ylabel=metric, title=f"{metric} vs K, α = {alpha}")
        ax_kl.set(xlabel="K (modules transplanted)", ylabel="KL (nats/token)",
                  title=f"KL(target ‖ transplanted) on general text, α = {alpha}")
        ax_s.legend(fontsize=8)
        ax_kl.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
