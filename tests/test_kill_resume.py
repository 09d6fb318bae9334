"""Resuming an interrupted run gives what an uninterrupted run gives, and finished work is not redone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from grafting.data.datamodule import GraftingDataModule

ROOT = Path(__file__).resolve().parents[1]


class _Killed(RuntimeError):
    pass


class _Recorder(L.LightningModule):
    """Learns nothing useful; records which samples each step trains on."""

    def __init__(self, crash_at: int | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.crash_at, self.seen = crash_at, []

    def training_step(self, batch, batch_idx):
        if self.crash_at is not None and self.global_step == self.crash_at:
            raise _Killed  # like a kill: nothing is saved on the way out
        self.seen.append(sorted(batch["input_ids"][:, 0].tolist()))
        return (self.w * batch["input_ids"].float()).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, module, steps, ckpt_path=None, every=3):
    from lightning.pytorch.callbacks import ModelCheckpoint

    items = [{"input_ids": torch.tensor([i, i]), "labels": torch.tensor([i, i])} for i in range(10)]
    data = GraftingDataModule(items, None, pad_id=0, batch_size=2, seed=7)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=every,
                                 enable_version_counter=False)
    trainer = L.Trainer(max_steps=steps, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except _Killed:
        pass
    return module.seen


# 5 batches an epoch; a checkpoint every 3 steps (mid-epoch) or every 5 (at the end of an epoch)
@pytest.mark.parametrize(("crash_at", "every"), [(5, 3), (7, 3), (10, 3), (7, 5), (12, 5)])
def test_resume_mid_epoch_trains_on_the_batches_an_uninterrupted_run_trains_on(tmp_path, crash_at, every):
    expected = _fit(tmp_path / "whole", _Recorder(), 13, every=every)
    before = _fit(tmp_path / "cut", _Recorder(crash_at=crash_at), 13, every=every)
    last = tmp_path / "cut" / "last.ckpt"
    done = torch.load(last, weights_only=True)["global_step"]
    assert done == crash_at // every * every
    after = _fit(tmp_path / "cut", _Recorder(), 13, ckpt_path=str(last), every=every)
    assert before[:done] + after == expected
    assert expected[:5] != expected[5:10]  # epochs are shuffled differently


def test_resume_without_the_saved_position_would_repeat_batches(tmp_path, monkeypatch):
    """The check above can fail: without the data module's state, the epoch restarts from its first batch."""
    expected = _fit(tmp_path / "whole", _Recorder(), 13)
    before = _fit(tmp_path / "cut", _Recorder(crash_at=7), 13)
    monkeypatch.setattr(GraftingDataModule, "load_state_dict", lambda self, state: None)
    after = _fit(tmp_path / "cut", _Recorder(), 13, ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert before[:6] + after != expected


# ----------------------------------------------------------------------------- a real run, killed

ARGS = ["debug=smoke", "finetune.steps=8", "align.steps=30", "checkpoint_every=5", "logger=csv"]


def _train(run_dir: Path, *extra: str, wait: bool = True):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "train.py", *ARGS, f"hydra.run.dir={run_dir}", *extra]
    if wait:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "weights.safetensors")


def _assert_close(a: dict, b: dict, what: str, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{what}: {k} differs by {(a[k] - b[k]).abs().max()}"


def _assert_numbers_close(a, b, path: str = "results") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_numbers_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_killed_run_resumes_to_the_artifacts_of_an_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = _train(whole, wait=False)  # meanwhile, on the other core
    proc = _train(killed, wait=False)
    # Kill during Post-T alignment: fine-tuning and Pre-T alignment have finished by then.
    checkpoint = killed / "checkpoints" / "align_post" / "last.ckpt"
    deadline = time.monotonic() + 500
    while not checkpoint.is_file():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no Post-T checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "align" / "post").exists() and not (killed / "results.json").exists()
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < step < 30, step

    finished = [killed / "tuned_block" / "weights.safetensors", killed / "align" / "pre" / "weights.safetensors",
                killed / "checkpoints" / "finetune" / "last.ckpt", killed / "checkpoints" / "align_pre" / "last.ckpt"]
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    resumed = _train(killed, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the run's log file holds Lightning's lines (the console does not); the resumed run's part starts at its
    # first phase line (the file is appended to)
    log = (killed / "train.log").read_text().rsplit("1/4 fine-tune", 1)[1]
    fits = log.count("[lightning.pytorch.utilities.rank_zero][INFO] - `Trainer.fit` stopped")
    assert "resuming align_post" in resumed.stdout + resumed.stderr, (resumed.stdout + resumed.stderr)[-3000:]
    assert fits == 1, log[-3000:]  # one fit: the rest of Post-T
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps, "finished work was recomputed"

    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]
    for artifact in ("tuned_block", "align/pre", "align/post", "graft"):
        _assert_close(_tensors(killed / artifact), _tensors(whole / artifact), artifact)
    got, expected = (json.loads((d / "results.json").read_text()) for d in (killed, whole))
    _assert_numbers_close(got["models"], expected["models"], "models")
    _assert_numbers_close(got["align"], expected["align"], "align")
