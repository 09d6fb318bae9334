"""W&B offline: one run per job, grouped by the sweep, named by its overrides without the seed, and its
summary holds the paper's table metrics (read back from the run's .wandb file, no network or account)."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path):
    """The protobuf records of a ``run-*.wandb`` file (a ':W&B' header, then LevelDB-style log blocks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL/LAST end one
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow  # a multirun (Hydra's job names come from its launcher): a subprocess
def test_offline_run_per_job_with_table_metrics(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "train.py", f"paths.log_dir={tmp_path}", "debug=smoke", "logger=wandb",
                           "run_name=wb", "graft.strategy=original", "seed=0", "-m"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [p.parent for p in tmp_path.rglob("results.json")]
    (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
    summary, run = {}, None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    assert run is not None and run.run_group == "wb"
    # the name is the job's overrides, the seed left out: the seeds of one setting share it
    assert run.display_name == "debug=smoke,graft.strategy=original,logger=wandb,run_name=wb"
    grafted = json.loads((job / "results.json").read_text())["models"]["Grafted"]
    for metric in ("f_H", "f_S", "fact", "P", "MLM", "kl_host"):
        logged, saved = summary[f"Grafted/{metric}"], grafted[metric]
        assert (logged is None and math.isnan(saved)) or math.isclose(logged, saved, rel_tol=1e-9), metric
