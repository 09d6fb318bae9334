"""Faults: a NaN loss stops the run by name and keeps the last good checkpoint; resume skips finished work."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_job

from grafting.callbacks import FiniteLossGuard, NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]


class _Diverging(L.LightningModule):
    def __init__(self, bad_step: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch[0]).sum()
        return loss * float("nan") if self.global_step >= self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_nan_loss_stops_with_stage_and_step_and_keeps_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 1)), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=2)
    trainer = L.Trainer(max_steps=20, callbacks=[FiniteLossGuard("align_pre"), checkpoint], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(NonFiniteLossError, match=r"\[align_pre\] non-finite loss nan at step 5"):
        trainer.fit(_Diverging(bad_step=5), data)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and torch.isfinite(saved["state_dict"]["w"]).all()


def test_resume_reads_back_finished_steps(tmp_path):
    run_dir = run_job(["debug=smoke", "checkpoint_every=2"], tmp_path)
    assert (run_dir / "checkpoints" / "finetune" / "last.ckpt").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").unlink()  # as if the job died during evaluation
    stamps = {p: p.stat().st_mtime_ns for p in [run_dir / "tuned_block" / "weights.safetensors",
                                                run_dir / "align" / "pre" / "weights.safetensors",
                                                run_dir / "align" / "post" / "weights.safetensors"]}
    run_job(["debug=smoke", "resume=true"], tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "finished steps were recomputed"
    assert json.loads((run_dir / "results.json").read_text())["models"] == results["models"]


class _Saves:
    """Stands in for a model or tokenizer: save_pretrained writes one file holding ``text``."""

    def __init__(self, name: str, text: str):
        self.name, self.text = name, text

    def save_pretrained(self, folder) -> None:
        (Path(folder) / self.name).write_text(self.text)


def test_a_second_writer_of_a_trained_model_keeps_the_first_copy(tmp_path):
    from grafting.cache import save_trained_model

    final = tmp_path / "model"
    save_trained_model(final, _Saves("weights", "first"), _Saves("tok", "t"), "report.json", {"run": 1})
    save_trained_model(final, _Saves("weights", "second"), _Saves("tok", "t"), "report.json", {"run": 2})
    assert (final / "weights").read_text() == "first" and json.loads((final / "report.json").read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == ["model"]  # no temporary folder left

    class Broken(_Saves):
        def save_pretrained(self, folder) -> None:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # no copy to fall back on: the error surfaces
        save_trained_model(tmp_path / "other", Broken("weights", ""), _Saves("tok", "t"), "report.json", {})
