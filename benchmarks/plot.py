"""``scaling.png``: time and peak memory per protocol step against model size (case i) and tokens per step (case j)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from benchmarks.result import Measurement

STEPS = ("block fine-tune (LoRA r=8)", "alignment Pre-T", "alignment Post-T", "distillation")


def _step(what: str) -> str:
    return next((s for s in STEPS if what.startswith(s)), "")


def scaling_plot(measurements: list[Measurement], path: Path) -> Path | None:
    """Write the figure when cases i and j ran; return its path (None otherwise)."""
    by_size = [m for m in measurements if m.case == "i" and _step(m.what)]
    by_tokens = [m for m in measurements if m.case == "j"]
    if not by_size or not by_tokens:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    size: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for m in by_size:
        size[_step(m.what)].append((m.extra["params_M"], m.fast, m.extra["peak_MiB"]))
    for step, points in size.items():
        points.sort()
        axes[0, 0].plot([p[0] for p in points], [p[1] for p in points], "o-", label=step)
        axes[1, 0].plot([p[0] for p in points], [p[2] for p in points], "o-", label=step)
    tokens: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for m in by_tokens:
        models = m.what.split(", ")[1]
        tokens[f"{_step(m.what)}, {models}"].append((m.extra["tokens"], m.extra["us_per_token"], m.extra["peak_MiB"]))
    for label, points in tokens.items():
        points.sort()
        style = "o-" if "tiny" in label else "s--"
        axes[0, 1].plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        axes[1, 1].plot([p[0] for p in points], [p[2] for p in points], style, label=label)
    titles = [["CPU s per step vs model size (default batch)", "CPU us per token vs tokens per step"],
              ["peak MiB of one step vs model size", "peak MiB of one step vs tokens per step"]]
    xlabels = ["host parameters (millions)", "tokens per step"]
    for row in range(2):
        for col in range(2):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(titles[row][col], fontsize=10)
            ax.set_xlabel(xlabels[col])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
