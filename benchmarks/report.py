"""RESULTS.md from the measurements of one run (and, with ``--only``, the earlier runs of the other cases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.notes import notes
from benchmarks.result import Measurement

TITLES = {
    "a": "(a) Framework overhead: Lightning alignment step / bare PyTorch loop (floor <= 1.10x)",
    "b": "(b) Truncated forward vs full forward with a hook (floor >= 2x at the early layer)",
    "c": "(c) Batched left-padded generation vs one prompt at a time (floor >= 5x)",
    "d": "(d) Batched MLM scoring vs one forward per masked word (floor >= 5x)",
    "e": "(e) SkillPack compression of a pythia-160m-sized delta",
    "f": "(f) Peak memory of one alignment step",
    "g": "(g) Training throughput as a fraction of the measured matmul peak",
    "h": "(h) Logit-lens KL loss: chunked and fused vs the plain formula",
    "i": "(i) Roofline of every training step: CPU s/step over max(compute floor, memory floor), one thread "
         "(floor <= 2 for alignment and distillation on the tiny pair)",
    "j": "(j) How cost grows: time and peak memory per step against tokens per step",
    "k": "(k) Sweep runner: jobs per CPU-hour against two serial single-thread jobs",
    "l": "(l) SkillPack LoRA adapters in one pass, and the transplant KL with the target captured once",
    "m": "(m) Serving SkillPacks: apply / unload, and routed generation of a mixed batch against the base and a merge",
    "n": "(n) Freed memory reused (grafting.memory) against glibc's defaults: alignment step, page faults",
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


def _provenance(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    parts = [f"`{info['command']}`" if info.get("command") else ""]
    if info.get("date"):
        parts.append(f"on {info['date']}")
    if info.get("load_avg_1min") is not None:
        parts.append(f"load average {info['load_avg_1min']:.1f} at its start")
    machine = info.get("machine") or {}
    if machine:
        parts.append(f"({machine.get('cpu')}, {machine.get('cores')} cores, torch {machine.get('torch')})")
    return "Measured by " + " ".join(p for p in parts if p) + "."


def render(measurements: list[Measurement], machine: dict[str, Any], command: str, seconds: float,
           cases: dict[str, dict[str, Any]] | None = None, figure: Path | None = None) -> str:
    cases = cases or {}
    lines = ["# Benchmarks", "", f"Written by `{command}` in {seconds / 60:.1f} min; each case says which run measured it",
             "(`--only` re-measures some cases and keeps the others). Every ratio below comes from one run of",
             "one command on one machine; absolute figures are beside each ratio.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    for case, title in TITLES.items():
        rows = [m for m in measurements if m.case == case]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        if _provenance(cases.get(case)):
            lines += [_provenance(cases.get(case)), ""]
        text = notes(case, rows)
        if text:
            lines += [text, ""]
        if case == "j" and figure is not None:
            lines += [f"![time and peak memory per step against model size and tokens per step]({figure.name})", ""]
        lines += ["| measured | fast path | value | compared with | value | ratio | floor | details |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in rows:
            details = ", ".join(f"{k} {_num(v)}" for k, v in m.extra.items())
            lines.append(f"| {m.what} | {m.fast_label} | {_num(m.fast)} {m.unit} | {m.simple_label} | "
                         f"{_num(m.simple)}{' ' + m.unit if m.simple is not None else ''} | {_num(m.ratio)} | "
                         f"{_verdict(m)} | {details} |")
        lines.append("")
    return "\n".join(lines)
