"""``python -m benchmarks [--quick] [--only a,b] [--out DIR]``: run the suite, write RESULTS.md and results.json.

Every case builds real-sized random models from ``grafting/presets/models/*-random.yaml`` (no weights needed) and
runs on the GPU when there is one. ``--quick`` uses a 2-layer model instead: seconds, for tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import Settings, machine
from benchmarks.plot import scaling_plot
from benchmarks.report import render
from benchmarks.result import Measurement
from grafting.memory import reuse_freed_memory

CASES = {"a": "overhead", "b": "truncation", "c": "generation", "d": "mlm", "e": "compression",
         "f": "align_memory", "g": "throughput", "h": "kl_loss", "i": "roofline_steps", "j": "scaling", "k": "sweep",
         "l": "skillpack_transplant", "m": "pack_serving",
         "n": "malloc_reuse"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models (seconds); the figures mean little")
    parser.add_argument("--only", default="".join(CASES),
                        help="cases to run, e.g. 'abc' or 'a,c'; the others keep their figures from results.json")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder for RESULTS.md/results.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    unknown = set(args.only.replace(",", "")) - set(CASES)
    if unknown:
        parser.error(f"--only: unknown case(s) {sorted(unknown)}; choose from {''.join(CASES)}")
    previous = args.out / "results.json"
    if args.quick and previous.is_file() and not json.loads(previous.read_text()).get("quick"):
        # quick figures mean little: they must not replace the full-size ones a document quotes
        parser.error(f"--quick would overwrite the full-size figures in {previous}; pass --out DIR for quick runs")
    logging.getLogger("lightning").setLevel(logging.ERROR)  # the Trainer's banners, once per case
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    reuse_freed_memory()  # as train.py and evaluate.py run (case n measures what it changes)
    settings = Settings(quick=args.quick, device=torch.device(args.device))
    info = machine()
    command = ("python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    measurements, cases, began = [], {}, time.perf_counter()
    for case, module in CASES.items():
        if case not in args.only:
            continue
        start, load = time.perf_counter(), os.getloadavg()[0]
        rows = importlib.import_module(f"benchmarks.cases.{module}").run(settings)
        measurements += rows
        cases[case] = {"command": command, "date": time.strftime("%Y-%m-%d"), "seconds": time.perf_counter() - start,
                       "load_avg_1min": load, "machine": info}
        for m in rows:
            print(f"[{case}] {m.what}: ratio {m.ratio if m.ratio is not None else '-'} "
                  f"{'' if m.met is None else ('met' if m.met else 'NOT MET')}", flush=True)
        print(f"[{case}] {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    measurements, cases = _merge(args.out / "results.json", measurements, cases, args.quick)
    (args.out / "results.json").write_text(json.dumps(
        {"command": command, "seconds": seconds, "machine": info, "quick": args.quick, "cases": cases,
         "measurements": [m.to_dict() for m in measurements]}, indent=2))
    figure = scaling_plot(measurements, args.out / "scaling.png")
    (args.out / "RESULTS.md").write_text(render(measurements, info, command, seconds, cases, figure))
    print(f"wrote {args.out / 'RESULTS.md'} ({seconds:.0f} s)")
    return 0


def _merge(path: Path, measurements: list[Measurement], cases: dict, quick: bool) -> tuple[list[Measurement], dict]:
    """Keep the cases this run did not measure from an earlier full-size ``results.json`` (``--only`` updates)."""
    if quick or not path.is_file():
        return measurements, cases
    old = json.loads(path.read_text())
    if old.get("quick"):
        return measurements, cases
    kept = [Measurement(**{k: v for k, v in m.items() if k != "met"}) for m in old["measurements"]
            if m["case"] not in cases]
    old_cases = old.get("cases") or {}
    earlier = {m.case: old_cases.get(m.case, {"command": old.get("command"), "machine": old.get("machine")})
               for m in kept}
    merged = sorted(kept + measurements, key=lambda m: m.case)  # stable: each case keeps its row order
    return merged, {**earlier, **cases}


if __name__ == "__main__":
    sys.exit(main())
