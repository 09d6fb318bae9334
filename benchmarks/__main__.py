"""``python -m benchmarks [--quick] [--only a,b] [--out DIR]``: run the suite, write RESULTS.md and results.json.

Every case builds real-sized random models from ``conf/model/*-random.yaml`` (no weights needed) and
runs on the GPU when there is one. ``--quick`` uses a 2-layer model instead: seconds, for tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import Settings, machine
from benchmarks.report import render

CASES = {"a": "overhead", "b": "truncation", "c": "generation", "d": "mlm", "e": "compression",
         "f": "align_memory", "g": "throughput", "h": "kl_loss"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models (seconds); the figures mean little")
    parser.add_argument("--only", default="".join(CASES), help="cases to run, e.g. 'abc' or 'a,c'")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder for RESULTS.md/results.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    unknown = set(args.only.replace(",", "")) - set(CASES)
    if unknown:
        parser.error(f"--only: unknown case(s) {sorted(unknown)}; choose from {''.join(CASES)}")
    logging.getLogger("lightning").setLevel(logging.ERROR)  # the Trainer's banners, once per case
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    settings = Settings(quick=args.quick, device=torch.device(args.device))
    measurements, began = [], time.perf_counter()
    for case, module in CASES.items():
        if case not in args.only:
            continue
        start = time.perf_counter()
        rows = importlib.import_module(f"benchmarks.cases.{module}").run(settings)
        measurements += rows
        for m in rows:
            print(f"[{case}] {m.what}: ratio {m.ratio if m.ratio is not None else '-'} "
                  f"{'' if m.met is None else ('met' if m.met else 'NOT MET')}", flush=True)
        print(f"[{case}] {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - began
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    (args.out / "results.json").write_text(json.dumps(
        {"command": command.strip(), "seconds": seconds, "machine": info, "quick": args.quick,
         "measurements": [m.to_dict() for m in measurements]}, indent=2))
    (args.out / "RESULTS.md").write_text(render(measurements, info, command.strip(), seconds))
    print(f"wrote {args.out / 'RESULTS.md'} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
