"""The project's one interval: a mean over seeds whose 95% interval counts both seeds and test items.

Every number the result documents quote is a mean over training seeds of a score over a finite test
set (1000 prompts, 64 facts, 100 texts). Two sources of noise move it:

- **seeds**: another seed trains another block and other translators (between-seed variance);
- **test items**: the test set is one finite sample of the task (within-seed, item-level variance).

The test set is the same for every seed, so its noise does not average out over seeds and does not
show in the seed-to-seed spread. :func:`seed_item_interval` therefore adds the two:

    SE^2 = s_b^2 / S + mean_s(v_s / n_s)

with ``s_b^2`` the sample variance of the S per-seed means and ``v_s`` the item variance within seed
s (``p(1-p) n/(n-1)`` for a proportion), and takes ``mean ± t_df · SE`` with Student's t at the
Welch-Satterthwaite degrees of freedom of the two terms (S-1 for the seeds, n-1 for the items; one
seed counts items only). For a
proportion the interval is also widened to contain the exact Clopper-Pearson interval of the pooled
score over ``n`` items, so that a score where every item agrees (1000 of 1000) still has the width
its finite test set allows ([0.996, 1.000]), and the bounds stay in [0, 1]. A bracket of zero width
comes only from a metric without noise (e.g. a value measured on no test items).

``tests/test_stats.py`` checks by simulation that this interval covers the truth at >= 90% on
seed x item data where the percentile bootstrap over seed means (:func:`bootstrap_interval`, kept for
comparison) does not. "Shown" in the documents means :func:`separated` under this interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

Stats = tuple[float, float, float]  # (mean, low, high)


# ----------------------------------------------------------------------------------- distributions


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _bisect(cdf, q: float, lo: float, hi: float) -> float:
    for _ in range(64):  # 2^-64 of the bracket: below float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def beta_quantile(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b)."""
    return _bisect(lambda x: betainc(a, b, x), q, 0.0, 1.0)


@functools.lru_cache(maxsize=256)
def t_quantile(q: float, df: float) -> float:
    """The q-quantile (q > 0.5) of Student's t with ``df`` degrees of freedom."""
    def cdf(t: float) -> float:
        return 1.0 - 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return _bisect(cdf, q, 0.0, 1e3)


def normal_quantile(q: float) -> float:
    return math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)).item()


def clopper_pearson(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of ``successes`` of ``n`` (a fractional count is allowed: a mean over seeds)."""
    alpha = 1.0 - level
    low = 0.0 if successes <= 0 else beta_quantile(alpha / 2, successes, n - successes + 1)
    high = 1.0 if successes >= n else beta_quantile(1 - alpha / 2, successes + 1, n - successes)
    return low, high


# ----------------------------------------------------------------------------------------- interval


def _finite(values: Sequence[float]) -> list[int]:
    return [i for i, v in enumerate(values) if v is not None and not math.isnan(float(v))]


def seed_item_interval(seed_means: Sequence[float], n_items: int | Sequence[int] | None = None,
                       item_vars: Sequence[float] | None = None, proportion: bool = False,
                       level: float = 0.95) -> Stats:
    """``(mean, low, high)`` over seeds, counting seed and test-item noise (see the module docstring).

    Args:
        seed_means: one score per seed (NaNs are dropped with their item data).
        n_items: test items per seed (one number, or one per seed); None: no item noise is known.
        item_vars: the item-level variance within each seed; for ``proportion=True`` it is
            ``p(1-p) n/(n-1)`` and need not be given.
        proportion: the score is a fraction of items (f_H, f_S, fact, routing accuracy): bounded to
            [0, 1] and never narrower than the exact Clopper-Pearson interval of the pooled score.
        level: the confidence level.
    """
    keep = _finite(seed_means)
    means = [float(seed_means[i]) for i in keep]
    if not means:
        return math.nan, math.nan, math.nan
    s = len(means)
    ns = ([int(n_items)] * len(seed_means) if isinstance(n_items, int | float) else list(n_items)) \
        if n_items is not None else None
    ns = [ns[i] for i in keep] if ns is not None else None
    mean = sum(means) / s
    between = sum((m - mean) ** 2 for m in means) / (s - 1) if s > 1 else 0.0
    within = 0.0
    if ns is not None:
        if proportion:
            vars_ = [m * (1 - m) * n / max(n - 1, 1) for m, n in zip(means, ns, strict=True)]
        elif item_vars is not None:
            vars_ = [float(item_vars[i]) for i in keep]
        else:
            vars_ = [0.0] * s
        within = sum(v / n for v, n in zip(vars_, ns, strict=True) if n > 0) / s
    se = math.sqrt(between / s + within)
    q = (1 + level) / 2
    # Welch-Satterthwaite degrees of freedom: the seed term has S-1, the item term about n-1.
    n_mean = sum(ns) / s if ns is not None else 1
    parts = [(between / s, s - 1), (within, n_mean - 1)]
    denom = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    df = (se**4 / denom) if denom > 0 else math.inf
    half = (t_quantile(q, round(df, 1)) if df < 1e4 else normal_quantile(q)) * se  # rounded: cached
    low, high = mean - half, mean + half
    if proportion:
        if ns is not None:
            n_pool = sum(ns) / s  # the test set is shared by the seeds: its size, not seeds x size
            cp_low, cp_high = clopper_pearson(mean * n_pool, n_pool, level)
            low, high = min(low, cp_low), max(high, cp_high)
        low, high = max(low, 0.0), min(high, 1.0)
    return mean, low, high


PROPORTIONS = ("f_H", "f_S", "fact")  # task scores: fractions of the test items (also their _line / _whole forms)
NONNEGATIVE = ("P", "MLM", "ppl_ref", "kl_host")  # language scores that cannot go below 0: the interval stops there


def score_interval(per_seed: Sequence[dict], metric: str, level: float = 0.95) -> Stats:
    """:func:`seed_item_interval` of ``metric`` over one model's score dicts, one per seed, as the evaluation
    writes them: a task score is a proportion of ``n`` items (``val_*`` of ``val_n`` validation items); a language score ``m`` carries ``m_n`` items and
    their variance ``m_item_var``. A metric with neither counts the seeds alone."""
    values = [float(s.get(metric, math.nan)) if isinstance(s.get(metric), int | float) else math.nan for s in per_seed]
    prefix = "val_" if metric.startswith("val_") else ""  # validation scores carry their own count
    if metric.removeprefix(prefix).removesuffix("_line").removesuffix("_whole") in PROPORTIONS:
        ns = [int(s.get(f"{prefix}n", 0)) for s in per_seed]
        return seed_item_interval(values, n_items=ns if all(ns) else None, proportion=True, level=level)
    if all(f"{metric}_n" in s and f"{metric}_item_var" in s for s in per_seed):
        stats = seed_item_interval(values, n_items=[int(s[f"{metric}_n"]) for s in per_seed],
                                   item_vars=[float(s[f"{metric}_item_var"]) for s in per_seed], level=level)
    else:
        stats = seed_item_interval(values, level=level)
    if metric in NONNEGATIVE and stats[1] < 0:  # a t-interval over few seeds can cross a bound the metric cannot
        return stats[0], 0.0, stats[2]
    return stats


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                   item_var: Sequence[float] | None = None, n_items: int | None = None,
                   level: float = 0.95) -> Stats:
    """A share ``mean(num) / mean(den)`` (e.g. a graft's share of the tuned donor's gain over a control), seeds
    paired, by the delta method: the seed term is the variance of the linearised per-seed ratio
    ``(num - r den) / mean(den)``; the item term (``item_var``: per seed, the item variance of
    ``num - r den``, e.g. from the proportions' ``p(1-p)``; ``n_items`` test items) is added as in
    :func:`seed_item_interval`, with Student's t at the Welch-Satterthwaite degrees of freedom."""
    keep = [i for i, (a, b) in enumerate(zip(numerators, denominators, strict=True))
            if not (math.isnan(float(a)) or math.isnan(float(b)))]
    if not keep:
        return math.nan, math.nan, math.nan
    nums = [float(numerators[i]) for i in keep]
    dens = [float(denominators[i]) for i in keep]
    s = len(keep)
    num, den = sum(nums) / s, sum(dens) / s
    if den == 0:
        return math.nan, math.nan, math.nan
    ratio = num / den
    lin = [(a - ratio * b) / den for a, b in zip(nums, dens, strict=True)]
    seed_term = sum(x * x for x in lin) / (s - 1) / s if s > 1 else 0.0
    item_term = 0.0
    if item_var is not None and n_items:
        item_term = sum(float(item_var[i]) for i in keep) / s / (den * den) / n_items
    se = math.sqrt(seed_term + item_term)
    if se == 0.0:
        return ratio, (ratio if s > 1 or item_var is not None else math.nan), \
            (ratio if s > 1 or item_var is not None else math.nan)
    parts = [(seed_term, s - 1), (item_term, (n_items or 1) - 1)]
    denom = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    df = se**4 / denom if denom > 0 else math.inf
    half = (t_quantile((1 + level) / 2, round(df, 1)) if df < 1e4 else normal_quantile((1 + level) / 2)) * se
    return ratio, ratio - half, ratio + half


def share_interval(model: Sequence[float], control: Sequence[float], reference: Sequence[float],
                   n_items: int | None = None, level: float = 0.95) -> Stats:
    """The share of ``reference``'s gain over ``control`` that ``model`` reaches, ``(m - c) / (r - c)``, from
    per-seed proportions on ``n_items`` shared test items (e.g. Grafted, VanillaGraft and Tuned's fact).

    The item variances are those of Agresti-Coull's adjusted proportions ``(p n + 2) / (n + 4)``: a proportion
    where every item agrees (0 of 300) still has the item noise its finite test set allows, so a share of
    all-zero scores gets a width, not a bracket of zero width."""
    r0 = (sum(model) - sum(control)) / max(sum(reference) - sum(control), 1e-12)

    def item_var(p: float) -> float:
        adjusted = (p * n_items + 2) / (n_items + 4) if n_items else p
        return adjusted * (1 - adjusted)

    var = [item_var(m) + (1 - r0) ** 2 * item_var(c) + r0**2 * item_var(t)
           for m, c, t in zip(model, control, reference, strict=True)]
    return ratio_interval([m - c for m, c in zip(model, control, strict=True)],
                          [t - c for t, c in zip(reference, control, strict=True)],
                          item_var=var if n_items else None, n_items=n_items, level=level)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> Stats:
    """``(mean, low, high)``: the percentile bootstrap over seed means alone.

    Kept as the baseline the coverage test compares against, and for quantities with no test items
    (e.g. a training loss). It ignores the test items and has zero width where the seeds agree.
    """
    data = torch.tensor([float(v) for v in values if not math.isnan(float(v))], dtype=torch.float64)
    if data.numel() == 0:
        return math.nan, math.nan, math.nan
    mean = data.mean().item()
    if data.numel() == 1:
        return mean, mean, mean
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, data.numel(), (resamples, data.numel()), generator=gen)
    means = data[idx].mean(dim=1)
    alpha = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return mean, low, high


def separated(a: Stats, b: Stats) -> bool:
    """True when two ``(mean, low, high)`` intervals do not overlap: the claim "a differs from b" is shown."""
    return a[1] > b[2] or b[1] > a[2]


def format_interval(stats: Stats, digits: int = 3) -> str:
    """``0.812 [0.700, 0.920]``, the value alone when there is no interval, or ``n/a``."""
    mean, low, high = stats
    if math.isnan(mean):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


INTERVAL_METHOD = ("mean over seeds ± t x sqrt(between-seed variance / S + mean within-seed item variance / n), "
                   "t at the Welch-Satterthwaite degrees of freedom, widened for proportions to the exact Clopper-Pearson interval of the pooled score "
                   "(grafting.metrics.stats.seed_item_interval)")
