"""RESULTS.md from the measurements of one run."""

from __future__ import annotations

from typing import Any

from benchmarks.result import Measurement

TITLES = {
    "a": "(a) Framework overhead: Lightning alignment step / bare PyTorch loop (floor <= 1.10x)",
    "b": "(b) Truncated forward vs full forward with a hook (floor >= 2x at the early layer)",
    "c": "(c) Batched left-padded generation vs one prompt at a time (floor >= 5x)",
    "d": "(d) Batched MLM scoring vs one forward per masked word (floor >= 5x)",
    "e": "(e) SkillPack compression of a pythia-160m-sized delta",
    "f": "(f) Peak memory of one alignment step",
    "g": "(g) Training throughput as a fraction of the measured matmul peak",
    "h": "(h) Logit-lens KL loss: closed-form backward vs autograd through the formula",
}


def _num(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _verdict(m: Measurement) -> str:
    if m.met is None:
        return ""
    op = ">=" if m.higher_is_better else "<="
    return f"{'met' if m.met else '**not met**'} ({op} {m.floor:g})"


def render(measurements: list[Measurement], machine: dict[str, Any], command: str, seconds: float) -> str:
    lines = ["# Benchmarks", "", f"Written by `{command}` in {seconds / 60:.1f} min. Every ratio below comes from one run of",
             "that command on one machine; absolute figures are beside each ratio.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    for case, title in TITLES.items():
        rows = [m for m in measurements if m.case == case]
        if not rows:
            continue
        lines += [f"## {title}", "", "| measured | fast path | value | compared with | value | ratio | floor | details |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in rows:
            details = ", ".join(f"{k} {_num(v)}" for k, v in m.extra.items())
            lines.append(f"| {m.what} | {m.fast_label} | {_num(m.fast)} {m.unit} | {m.simple_label} | "
                         f"{_num(m.simple)}{' ' + m.unit if m.simple is not None else ''} | {_num(m.ratio)} | "
                         f"{_verdict(m)} | {details} |")
        lines.append("")
    return "\n".join(lines)
