"""Transplant sweep reporting: per-run records -> summary rows -> markdown tables.

A *record* is one evaluated condition: a selection rule (``top`` / ``bottom`` by a ``scorer``, ``random``
with a seed, ``all``, or ``blend``: every module blended at ``alpha``), K and alpha. Records of the same
(alpha, selection, scorer, K) are summarised into one *row*: the mean, sample std and a 95% percentile
bootstrap interval over the control seeds of the task scores, TIR, Recovery and KL. An undefined TIR /
Recovery (zero target, zero gap) stays undefined through the summary and is printed as its reason: nothing
is ever divided by zero. The figure is drawn by :mod:`grafting.transplant.figure`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from grafting.metrics.stats import bootstrap_interval
from grafting.transplant.metrics import MetricResult, recovery, tir

__all__ = ["SELECTIONS", "TASK_KEYS", "beats_random", "find_row", "format_cell", "record", "rule_label",
           "scorer_verdicts", "summarize", "summary_rows", "sweep_markdown", "top_vs_random"]

SELECTIONS = ("top", "random", "bottom", "all", "blend")
TASK_KEYS = ("f_H", "f_S", "fact")
COLUMNS = ("score", "tir", "recovery", "kl")


def _result_dict(res: MetricResult) -> dict[str, Any]:
    return {"value": res.value, "reason": res.reason}


def record(selection: str, k: int, k_effective: int, alpha: float, seed: int | None, modules: Sequence[str],
           scores: dict[str, float], kl: float, target: dict[str, float], source: dict[str, float],
           scorer: str | None = None) -> dict:
    """One evaluated condition, with TIR and Recovery for every task metric (undefined ones keep a reason)."""
    return {
        "selection": selection, "scorer": scorer, "k": k, "k_effective": k_effective, "alpha": alpha,
        "seed": seed, "modules": list(modules), "scores": {m: scores[m] for m in TASK_KEYS}, "kl": kl,
        "tir": {m: _result_dict(tir(scores[m], target[m])) for m in TASK_KEYS},
        "recovery": {m: _result_dict(recovery(scores[m], target[m], source[m])) for m in TASK_KEYS},
    }


def summarize(values: Iterable[float | None], reasons: Iterable[str | None] = ()) -> dict[str, Any]:
    """Mean, sample std (0 for one value), 95% bootstrap interval and count of the defined values.

    Args:
        values: numbers, ``None`` for an undefined metric.
        reasons: the matching ``MetricResult.reason`` strings (only the first non-empty one is kept).
    """
    values = list(values)
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    reason = next((r for r in reasons if r), None)
    if not defined:
        return {"mean": None, "std": None, "low": None, "high": None, "n": 0, "reason": reason or "no runs"}
    std = statistics.stdev(defined) if len(defined) > 1 else 0.0
    mean, low, high = bootstrap_interval(defined)
    partial = f"{len(values) - len(defined)} of {len(values)} undefined ({reason})" if len(defined) < len(values) \
        else None
    return {"mean": statistics.fmean(defined), "std": std, "low": low, "high": high, "n": len(defined),
            "reason": partial}


def summary_rows(records: Sequence[dict], metric: str) -> list[dict[str, Any]]:
    """One row per (alpha, selection, scorer, K) in first-seen order; ``metric`` picks score/TIR/Recovery."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["alpha"], rec["selection"], rec.get("scorer"), rec["k"]), []).append(rec)
    rows = []
    for (alpha, selection, scorer, k), recs in groups.items():
        row: dict[str, Any] = {"alpha": alpha, "selection": selection, "scorer": scorer, "k": k,
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


def rule_label(row: dict) -> str:
    """``top-K (l1)``, ``random-K``, ``all``, ``blend``."""
    if row["selection"] in ("all", "blend"):
        return row["selection"]
    return f"{row['selection']}-K" + (f" ({row['scorer']})" if row.get("scorer") else "")


def format_cell(stat: dict[str, Any], digits: int = 3, interval: bool = False) -> str:
    """``mean ± std`` (or ``mean [low, high]`` with ``interval``), a bare mean for one run, ``— (reason)``."""
    if stat["mean"] is None:
        return f"— ({stat['reason']})"
    text = f"{stat['mean']:.{digits}f}"
    if stat["n"] > 1:
        text += f" [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]" if interval \
            else f" ± {stat['std']:.{digits}f}"
    if stat.get("reason"):
        text += f" ({stat['reason']})"
    return text


def find_row(rows: Sequence[dict], alpha: float, selection: str, k: int | None = None,
             scorer: str | None = None) -> dict | None:
    for row in rows:
        if (row["alpha"] == alpha and row["selection"] == selection and (k is None or row["k"] == k)
                and (scorer is None or row.get("scorer") == scorer)):
            return row
    return None


def beats_random(top: dict, rnd: dict, column: str) -> bool:
    """True when the top-K value lies above the random-K 95% interval (top-K is one deterministic run)."""
    t, r = top[column], rnd[column]
    return t["mean"] is not None and r["high"] is not None and t["mean"] > r["high"]


def top_vs_random(rows: Sequence[dict], alpha: float, column: str = "score",
                  scorer: str | None = None) -> dict[str, list[int]]:
    """Ks where top-K is above / inside / below the random-K 95% interval on ``column``."""
    out: dict[str, list[int]] = {"above": [], "inside": [], "below": []}
    for top in (r for r in rows if r["alpha"] == alpha and r["selection"] == "top"
                and (scorer is None or r.get("scorer") == scorer)):
        rnd = find_row(rows, alpha, "random", top["k"])
        if rnd is None or top[column]["mean"] is None or rnd[column]["mean"] is None:
            continue
        if beats_random(top, rnd, column):
            out["above"].append(top["k"])
        elif rnd[column]["low"] is not None and top[column]["mean"] < rnd[column]["low"]:
            out["below"].append(top["k"])
        else:
            out["inside"].append(top["k"])
    return out


def scorer_verdicts(rows: Sequence[dict], alpha: float, scorers: Sequence[str], n_candidates: int) -> list[dict]:
    """Per scorer: smallest K (< N) where top-K beats random-K outside the interval, how many Ks it does,
    and the mean Recovery of top-K over the Ks below N (the higher, the better the scorer selects)."""
    out = []
    for scorer in scorers:
        tops = [r for r in rows if r["alpha"] == alpha and r["selection"] == "top" and r.get("scorer") == scorer
                and r["k_effective"] < n_candidates]
        wins = top_vs_random(tops + [r for r in rows if r["selection"] == "random"], alpha, "score", scorer)["above"]
        recs = [r["recovery"]["mean"] for r in tops if r["recovery"]["mean"] is not None]
        out.append({"scorer": scorer, "smallest_k": min(wins) if wins else None, "ks_beating_random": sorted(wins),
                    "mean_recovery": statistics.fmean(recs) if recs else None, "n_ks": len(tops)})
    return out


def _k_label(row: dict) -> str:
    return str(row["k"]) if row["k"] == row["k_effective"] else f"{row['k']} (capped to {row['k_effective']})"


def _table(rows: Sequence[dict], alpha: float, ks: Sequence[int], scorers: Sequence[str], column: str,
           title: str, n_seeds: int, n_all: int) -> list[str]:
    head = ["K", *(f"top ({s})" for s in scorers), f"random (mean [95% CI], {n_seeds} seeds)",
            *(f"bottom ({s})" for s in scorers), f"all ({n_all})"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    all_row = find_row(rows, alpha, "all")
    for k in ks:
        any_row = find_row(rows, alpha, "random", k) or find_row(rows, alpha, "top", k)
        cells = [_k_label(any_row) if any_row else str(k)]
        for selection, names in (("top", scorers), ("random", [None]), ("bottom", scorers)):
            for scorer in names:
                row = find_row(rows, alpha, selection, k, scorer)
                cells.append(format_cell(row[column], interval=True) if row else "n/a")
        cells.append(format_cell(all_row[column]) if all_row else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _blend_table(rows: Sequence[dict], metric: str) -> list[str]:
    blends = sorted((r for r in rows if r["selection"] == "blend"), key=lambda r: r["alpha"])
    if not blends:
        return []
    lines = ["**α-blending control: every module θ = (1 − α) θ_target + α θ_source**", "",
             f"| α | {metric} | TIR | Recovery | KL |", "|---|---|---|---|---|"]
    lines += [f"| {r['alpha']} | " + " | ".join(format_cell(r[c]) for c in COLUMNS) + " |" for r in blends]
    return lines + [""]


def sweep_markdown(rows: Sequence[dict], metric: str, target: dict[str, float], source: dict[str, float],
                   meta: dict[str, Any]) -> str:
    """Markdown report: reference scores, verdicts, then per alpha the score, TIR, Recovery and KL tables.

    Args:
        rows: ``summary_rows`` output.
        metric: the task metric behind TIR / Recovery (``f_H``, ``f_S`` or ``fact``).
        target, source: the untouched models' task scores.
        meta: ``eval_points``, ``n_candidates``, ``scorers``, ``ranked`` ({scorer: names, best first}),
            ``source``, ``target`` (what they are), ``command``.
    """
    ks = list(dict.fromkeys(r["k"] for r in rows if r["selection"] in ("top", "random")))
    alphas = list(dict.fromkeys(r["alpha"] for r in rows if r["selection"] != "blend"))
    scorers = list(meta.get("scorers") or dict.fromkeys(r["scorer"] for r in rows if r.get("scorer")))
    n_seeds = max((r["n_runs"] for r in rows if r["selection"] == "random"), default=0)
    n_all = int(meta.get("n_candidates") or 0)
    gap = source[metric] - target[metric]
    lines = [
        "## Training-free transplantation: task score vs K",
        "",
        f"Source: {meta.get('source')}. Target: {meta.get('target')}. {n_all} candidate modules; "
        f"{meta.get('eval_points')} test points. TIR and Recovery use `{metric}` "
        f"(target {target[metric]:.3f}, source {source[metric]:.3f}, gap {gap:+.3f}).",
        "",
        *([f"Command: `{meta['command']}`", ""] if meta.get("command") else []),
        "| model | f_H | f_S | fact |",
        "|---|---|---|---|",
        *(f"| {name} | " + " | ".join(f"{s[m]:.3f}" for m in TASK_KEYS) + " |"
          for name, s in (("target", target), ("source", source))),
        "",
    ]
    for scorer, ranked in (meta.get("ranked") or {}).items():
        lines.append(f"Ranking by `{scorer}` (first 10): " + ", ".join(f"`{n}`" for n in ranked[:10]))
    lines.append("")
    for alpha in alphas:
        lines += [f"### α = {alpha}", ""]
        for v in scorer_verdicts(rows, alpha, scorers, n_all):
            recov = "n/a" if v["mean_recovery"] is None else f"{v['mean_recovery']:.3f}"
            lines.append(f"- `{v['scorer']}`: top-K beats random-K outside its 95% interval ({metric}) at K = "
                         f"{v['ks_beating_random'] or 'none'} (smallest: {v['smallest_k'] or 'none'}); mean "
                         f"Recovery of top-K over the {v['n_ks']} Ks below N: {recov}")
        lines.append("")
        for column, title in (("score", f"{metric} after transplant"), ("tir", f"TIR ({metric})"),
                              ("recovery", f"Recovery ({metric})"),
                              ("kl", "KL(target ‖ transplanted) on general text, nats/token")):
            lines += _table(rows, alpha, ks, scorers, column, title, n_seeds, n_all)
    lines += _blend_table(rows, metric)
    return "\n".join(lines)
