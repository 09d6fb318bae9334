"""The transplant figure: TIR, Recovery and KL against K, one line per selection rule, intervals shaded.

A second row (when the sweep has the α-blending control) shows the same three against α for every module
blended at once, with the copy-all point at α = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from grafting.transplant.report import find_row, rule_label

__all__ = ["plot_sweep"]

PANELS = (("tir", "TIR"), ("recovery", "Recovery"), ("kl", "KL(target ‖ transplanted), nats/token"))


def _value(stat: dict, key: str = "mean") -> float:
    return math.nan if stat[key] is None else stat[key]


def plot_sweep(rows: Sequence[dict], metric: str, path: str | Path, title: str = "", alpha: float = 1.0) -> Path:
    """Write the PNG for the rows of one sweep (``summary_rows`` output) at transplant strength ``alpha``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    blends = sorted((r for r in rows if r["selection"] == "blend"), key=lambda r: r["alpha"])
    n_rows = 2 if blends else 1
    fig, axes = plt.subplots(n_rows, 3, figsize=(16, 4.4 * n_rows), squeeze=False)
    scorers = list(dict.fromkeys(r["scorer"] for r in rows if r.get("scorer")))
    colors = {s: f"C{i}" for i, s in enumerate(scorers)}
    all_row = find_row(rows, alpha, "all")
    for ax, (column, label) in zip(axes[0], PANELS, strict=True):
        for selection, style in (("top", "-"), ("bottom", ":")):
            for scorer in scorers:
                sel = [r for r in rows if r["alpha"] == alpha and r["selection"] == selection
                       and r.get("scorer") == scorer]
                if sel:
                    ax.plot([r["k_effective"] for r in sel], [_value(r[column]) for r in sel], style,
                            marker="o" if selection == "top" else "v", color=colors[scorer], label=rule_label(sel[0]))
        rnd = [r for r in rows if r["alpha"] == alpha and r["selection"] == "random"]
        if rnd:
            ks = [r["k_effective"] for r in rnd]
            ax.plot(ks, [_value(r[column]) for r in rnd], "-s", color="grey", label="random-K (mean, 95% CI)")
            ax.fill_between(ks, [_value(r[column], "low") for r in rnd], [_value(r[column], "high") for r in rnd],
                            color="grey", alpha=0.25)
        if all_row is not None:
            ax.axhline(_value(all_row[column]), color="black", ls="--", lw=1, label=f"all ({all_row['k_effective']})")
        if column == "recovery":
            ax.axhline(0.0, color="grey", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)  # K doubles along the sweep
        ticks = sorted({r["k_effective"] for r in rows if r["alpha"] == alpha and r["selection"] != "blend"})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)  # an all-undefined panel (zero target) has no x data
        ax.set(xlabel="K (modules transplanted)", ylabel=label if column == "kl" else f"{label} ({metric})",
               title=f"{label} vs K, α = {alpha}")
        ax.legend(fontsize=7)
    if blends:
        points = blends + ([all_row] if all_row is not None else [])
        for ax, (column, label) in zip(axes[1], PANELS, strict=True):
            ax.plot([r["alpha"] for r in points], [_value(r[column]) for r in points], "-D", color="C5",
                    label="every module blended")
            ax.set(xlabel="α", ylabel=label, title=f"α-blending control: {label} vs α")
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
