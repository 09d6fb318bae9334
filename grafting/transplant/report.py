"""Transplant sweep reporting: per-run records -> summary rows -> markdown tables.

A *record* is one evaluated condition: a selection rule (``top`` / ``bottom`` by a ``scorer``, ``random``
with a seed, ``all``, or ``blend``: every module blended at ``alpha``), K and alpha. Records of the same
(alpha, selection, scorer, K) are summarised into one *row*: the mean, sample std and a 95% interval
over the control draws of the task scores, TIR, Recovery and KL, from the project's one interval
(:func:`grafting.metrics.stats.seed_item_interval`: the spread over draws plus the noise of the finite
test set, the ``n_items`` test points of the task or the ``kl_items`` texts of the KL). An undefined TIR /
Recovery (zero target, zero gap) stays undefined through the summary and is printed as its reason: nothing
is ever divided by zero. The figure is drawn by :mod:`grafting.transplant.figure`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from grafting.metrics.stats import INTERVAL_METHOD, seed_item_interval
from grafting.names import TASK_METRICS
from grafting.transplant.metrics import MetricResult, recovery, tir

__all__ = ["P_SHOWN", "SELECTIONS", "TASK_KEYS", "beats_random", "draws_markdown", "find_row", "format_cell",
           "record", "rule_label", "scorer_verdicts", "summarize", "summary_rows", "sweep_markdown", "top_vs_random"]

SELECTIONS = ("top", "random", "bottom", "all", "blend")
TASK_KEYS = TASK_METRICS
COLUMNS = ("score", "tir", "recovery", "kl")


def _result_dict(res: MetricResult) -> dict[str, Any]:
    return {"value": res.value, "reason": res.reason}


def record(selection: str, k: int, k_effective: int, alpha: float, seed: int | None, modules: Sequence[str],
           scores: dict[str, float], kl: float, target: dict[str, float], source: dict[str, float],
           scorer: str | None = None, kl_item_var: float | None = None) -> dict:
    """One evaluated condition, with TIR and Recovery for every task metric (undefined ones keep a reason);
    ``kl_item_var``: the variance of the KL over the texts it averages (its test-item noise)."""
    return {
        "selection": selection, "scorer": scorer, "k": k, "k_effective": k_effective, "alpha": alpha,
        "seed": seed, "modules": list(modules), "scores": {m: scores[m] for m in TASK_KEYS}, "kl": kl,
        "kl_item_var": kl_item_var,
        "tir": {m: _result_dict(tir(scores[m], target[m])) for m in TASK_KEYS},
        "recovery": {m: _result_dict(recovery(scores[m], target[m], source[m])) for m in TASK_KEYS},
    }


def summarize(values: Iterable[float | None], reasons: Iterable[str | None] = (), n_items: int | None = None,
              proportion: bool = False, item_vars: Sequence[float | None] | None = None) -> dict[str, Any]:
    """Mean, sample std (0 for one value), 95% interval and count of the defined values.

    The interval is :func:`grafting.metrics.stats.seed_item_interval` over the values (one per draw),
    with the test-item noise of ``n_items`` items: a proportion's binomial noise (``proportion``), or
    each value's ``item_vars``. Without ``n_items`` only the spread over the values counts.

    Args:
        values: numbers, ``None`` for an undefined metric.
        reasons: the matching ``MetricResult.reason`` strings (only the first non-empty one is kept).
        n_items, proportion, item_vars: the test items behind each value (see above).
    """
    values = list(values)
    keep = [i for i, v in enumerate(values) if v is not None and not math.isnan(float(v))]
    defined = [float(values[i]) for i in keep]
    reason = next((r for r in reasons if r), None)
    if not defined:
        return {"mean": None, "std": None, "low": None, "high": None, "n": 0, "reason": reason or "no runs"}
    std = statistics.stdev(defined) if len(defined) > 1 else 0.0
    kept_vars = None
    if item_vars is not None:
        kept_vars = [0.0 if item_vars[i] is None else float(item_vars[i]) for i in keep]
    mean, low, high = seed_item_interval(defined, n_items, kept_vars, proportion=proportion)
    partial = f"{len(values) - len(defined)} of {len(values)} undefined ({reason})" if len(defined) < len(values) \
        else None
    return {"mean": mean, "std": std, "low": low, "high": high, "n": len(defined), "reason": partial}


def _binomial_var(p: float, n: int) -> float:
    return p * (1 - p) * n / max(n - 1, 1)


def summary_rows(records: Sequence[dict], metric: str, n_items: int | None = None,
                 kl_items: int | None = None, target: dict[str, float] | None = None,
                 source: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per (alpha, selection, scorer, K) in first-seen order; ``metric`` picks score/TIR/Recovery.

    ``n_items`` (task test points) and ``kl_items`` (KL texts) add the test-set noise to the intervals;
    TIR and Recovery carry the score's binomial noise scaled by ``1 / target`` and ``1 / gap``
    (``target`` and ``source`` are the untouched models' scores).
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["alpha"], rec["selection"], rec.get("scorer"), rec["k"]), []).append(rec)
    rows = []
    for (alpha, selection, scorer, k), recs in groups.items():
        row: dict[str, Any] = {"alpha": alpha, "selection": selection, "scorer": scorer, "k": k,
                               "k_effective": recs[0]["k_effective"], "n_runs": len(recs),
                               "seeds": [r["seed"] for r in recs if r["seed"] is not None]}
        score_vars = [_binomial_var(r["scores"][metric], n_items) for r in recs] if n_items else None
        scales = {"tir": target[metric] if target else 0.0,
                  "recovery": (source[metric] - target[metric]) if target and source else 0.0}
        for name in ("tir", "recovery"):
            ok = score_vars is not None and scales[name] != 0
            row[name] = summarize([r[name][metric]["value"] for r in recs], [r[name][metric]["reason"] for r in recs],
                                  n_items if ok else None,
                                  item_vars=[v / scales[name] ** 2 for v in score_vars] if ok else None)
        row["score"] = summarize([r["scores"][metric] for r in recs], n_items=n_items, proportion=True)
        for m in TASK_KEYS:
            row[m] = summarize([r["scores"][m] for r in recs], n_items=n_items, proportion=True)
        row["kl"] = summarize([r["kl"] for r in recs], n_items=kl_items if kl_items else None,
                              item_vars=[r.get("kl_item_var") for r in recs] if kl_items else None)
        if row["kl"]["low"] is not None:  # a KL is never negative: the t-interval's lower end is cut at 0
            row["kl"]["low"] = max(row["kl"]["low"], 0.0)
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


#: "Top-K beats random-K": at most this share of single random draws (+1) scores at least as high.
P_SHOWN = 0.05


def scorer_verdicts(rows: Sequence[dict], alpha: float, scorers: Sequence[str], n_candidates: int,
                    draws: Sequence[dict] | None = None) -> list[dict]:
    """Per scorer: the Ks (< N) where top-K beats random-K, the smallest, and the mean Recovery of top-K
    over the Ks below N (the higher, the better the scorer selects).

    With ``draws`` (:func:`grafting.transplant.draws.top_k_against_draws` rows of this ``alpha``) top-K
    beats random-K where its p-value among single random draws is at most :data:`P_SHOWN`
    (``ks_beating_random``; ``ks_below_random`` where it is as extreme the other way), and likewise for
    each matched kind of draw. Without them, the old yardstick: top-K above the interval of the
    random-K mean (``rule`` says which).
    """
    out = []
    for scorer in scorers:
        tops = [r for r in rows if r["alpha"] == alpha and r["selection"] == "top" and r.get("scorer") == scorer
                and r["k_effective"] < n_candidates]
        recs = [r["recovery"]["mean"] for r in tops if r["recovery"]["mean"] is not None]
        verdict: dict[str, Any] = {"scorer": scorer, "mean_recovery": statistics.fmean(recs) if recs else None,
                                   "n_ks": len(tops)}
        if draws is None:
            wins = top_vs_random(tops + [r for r in rows if r["selection"] == "random"], alpha, "score",
                                 scorer)["above"]
            verdict.update(rule="interval of the random-K mean", ks_beating_random=sorted(wins))
        else:
            mine = [d for d in draws if d["scorer"] == scorer]
            kinds = list(dict.fromkeys(kind for d in mine for kind in d["placement"]))
            for kind in kinds:
                places = [(d["k"], d["placement"][kind]) for d in mine if kind in d["placement"]]
                verdict[f"ks_beating_{kind}"] = sorted(k for k, p in places if p["p_at_least"] <= P_SHOWN)
                verdict[f"ks_below_{kind}"] = sorted(k for k, p in places if p["p_at_most"] <= P_SHOWN)
                verdict[f"n_draws_{kind}"] = min((p["n"] for _, p in places), default=0)
            verdict.update(rule="single random draws", kinds=kinds)
            verdict.setdefault("ks_beating_random", [])
        wins = verdict["ks_beating_random"]
        verdict["smallest_k"] = min(wins) if wins else None
        out.append(verdict)
    return out


def _verdict_line(v: dict, metric: str) -> str:
    recov = "n/a" if v["mean_recovery"] is None else f"{v['mean_recovery']:.3f}"
    tail = f"mean Recovery of top-K over the {v['n_ks']} Ks below N: {recov}"
    if v["rule"] != "single random draws":
        return (f"- `{v['scorer']}`: top-K beats random-K outside the interval of its mean ({metric}) at K = "
                f"{v['ks_beating_random'] or 'none'} (smallest: {v['smallest_k'] or 'none'}); {tail}")
    parts = []
    for kind in v["kinds"]:
        label = "single random draws" if kind == "random" else f"{kind}-matched draws"
        parts.append(f"above {v[f'n_draws_{kind}']} {label} (p ≤ {P_SHOWN}) at K = {v[f'ks_beating_{kind}'] or 'none'}, "
                     f"below at K = {v[f'ks_below_{kind}'] or 'none'}")
    return f"- `{v['scorer']}`: top-K " + "; ".join(parts) + f" (smallest K above random: {v['smallest_k'] or 'none'}); {tail}"


def draws_markdown(draws: Sequence[dict], metric: str, scorers: Sequence[str]) -> list[str]:
    """Tables of top-K's place among single random draws (and matched draws) per K, for one alpha."""
    if not draws:
        return []
    kinds = list(dict.fromkeys(kind for d in draws for kind in d["placement"]))
    n = {kind: min(d["placement"][kind]["n"] for d in draws if kind in d["placement"]) for kind in kinds}
    lines = [f"**Top-K among single random draws of K modules ({metric})**: each cell is top-K's score, its "
             f"percentile among the draws (ties count half) and p = (1 + draws scoring at least as high) / "
             f"(draws + 1); p ≤ {P_SHOWN} is \"top-K beats random-K\". Draws: {n['random']} single random draws "
             "per K" + "".join(f", {n[k]} {k}-matched draws per K and scorer" for k in kinds if k != "random")
             + ".", ""]
    for kind in kinds:
        shared = kind == "random"  # plain draws are the same for every scorer; matched ones are per scorer
        head = ["K", *(f"top ({s}) vs {kind}" for s in scorers)] + ([f"{kind} draws: median [2.5%, 97.5%]"]
                                                                    if shared else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in dict.fromkeys(d["k"] for d in draws):
            cells, values = [str(k)], []
            for scorer in scorers:
                d = next((d for d in draws if d["k"] == k and d["scorer"] == scorer and kind in d["placement"]), None)
                if d is None:
                    cells.append("n/a")
                    continue
                p, values = d["placement"][kind], d["draws"][kind]
                cells.append(f"{d['top']:.3f}: {p['percentile']:.0f}th, p {p['p_at_least']:.3f}"
                             + ("" if shared else f" (draws {_spread(values)})"))
            lines.append("| " + " | ".join(cells + ([_spread(values)] if shared else [])) + " |")
        lines.append("")
    return lines


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)

    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(f * (len(ordered) - 1))))]

    return f"{statistics.median(ordered):.3f} [{q(0.025):.3f}, {q(0.975):.3f}]"


def _k_label(row: dict) -> str:
    return str(row["k"]) if row["k"] == row["k_effective"] else f"{row['k']} (capped to {row['k_effective']})"


def _table(rows: Sequence[dict], alpha: float, ks: Sequence[int], scorers: Sequence[str], column: str,
           title: str, n_seeds: int, n_all: int) -> list[str]:
    head = ["K", *(f"top ({s})" for s in scorers), f"random (mean [95% interval], {n_seeds} draws)",
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
                   meta: dict[str, Any], draws: dict[float, list[dict]] | None = None) -> str:
    """Markdown report: reference scores, verdicts, then per alpha the score, TIR, Recovery and KL tables.

    Args:
        rows: ``summary_rows`` output.
        metric: the task metric behind TIR / Recovery (``f_H``, ``f_S`` or ``fact``).
        target, source: the untouched models' task scores.
        meta: ``eval_points``, ``n_candidates``, ``scorers``, ``ranked`` ({scorer: names, best first}),
            ``source``, ``target`` (what they are), ``command``.
        draws: alpha -> :func:`grafting.transplant.draws.top_k_against_draws` rows (the verdicts' yardstick).
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
        f"Intervals: {INTERVAL_METHOD}; over the random-K draws, with the {meta.get('eval_points')} test "
        "points (task scores, TIR, Recovery) or the KL's texts as the items. Top-K, bottom-K and all are one "
        "selection each: their place among single random draws is in the draw tables.",
        "",
    ]
    for scorer, ranked in (meta.get("ranked") or {}).items():
        lines.append(f"Ranking by `{scorer}` (first 10): " + ", ".join(f"`{n}`" for n in ranked[:10]))
    lines.append("")
    for alpha in alphas:
        lines += [f"### α = {alpha}", ""]
        alpha_draws = (draws or {}).get(alpha)
        for v in scorer_verdicts(rows, alpha, scorers, n_all, alpha_draws):
            lines.append(_verdict_line(v, metric))
        lines.append("")
        lines += draws_markdown(alpha_draws or [], metric, scorers)
        for column, title in (("score", f"{metric} after transplant"), ("tir", f"TIR ({metric})"),
                              ("recovery", f"Recovery ({metric})"),
                              ("kl", "KL(target ‖ transplanted) on general text, nats/token")):
            lines += _table(rows, alpha, ks, scorers, column, title, n_seeds, n_all)
    lines += _blend_table(rows, metric)
    return "\n".join(lines)
