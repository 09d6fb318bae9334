"""Distributed data: the sampler's split across processes, and DDP on 2 CPU processes == 1 process, 2x batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from grafting.data.datamodule import GraftingDataModule, ResumableSampler

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # measured: max |difference| about 2e-6 (float summation order), against ~7e-2 without gradient sync


def _batches(loader) -> list[list[int]]:
    return [b.tolist() for b in loader]


def test_sampler_replays_a_seeded_shuffling_dataloader_epoch_by_epoch():
    data = list(range(37))
    old = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)
    expected = [_batches(old) for _ in range(3)]
    sampler = ResumableSampler(data, seed=3)
    got = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        got.append(_batches(DataLoader(data, batch_size=4, sampler=sampler, drop_last=True)))
    assert got == expected  # single-process runs keep the numbers they had with shuffle=True
    assert got[0] != got[1]


@pytest.mark.parametrize("world", [2, 3])
def test_processes_split_one_permutation_step_by_step(world):
    data, batch = list(range(50)), 4
    whole = ResumableSampler(data, seed=0)
    whole.set_epoch(1)
    global_batches = _batches(DataLoader(data, batch_size=world * batch, sampler=whole, drop_last=True))
    per_rank = []
    for rank in range(world):
        sampler = ResumableSampler(data, seed=0, num_replicas=world, rank=rank)
        sampler.set_epoch(1)
        per_rank.append(_batches(DataLoader(data, batch_size=batch, sampler=sampler, drop_last=True)))
    for step, expected in enumerate(global_batches):  # step k of N processes = step k of one process, N x batch
        assert sorted(sum((r[step] for r in per_rank), [])) == sorted(expected)


def test_skip_drops_the_consumed_samples_once():
    data = list(range(20))
    sampler = ResumableSampler(data, seed=5, num_replicas=2, rank=1)
    full = list(sampler)
    sampler.skip(8)  # 8 samples of all processes together: 4 of this one
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # only the next iterator skips
    assert len(sampler) == len(full)  # Lightning's batch counters count the whole epoch


def test_datamodule_uses_the_trainer_world_and_lightning_keeps_its_sampler():
    class _FakeTrainer:
        world_size, global_rank = 2, 1

    data = GraftingDataModule([{"input_ids": torch.ones(3, dtype=torch.long), "labels": torch.ones(3)}] * 10,
                              None, pad_id=0, batch_size=2, seed=0)
    data.trainer = _FakeTrainer()
    loader = data.train_dataloader()
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)  # Lightning injects none of its own
    assert (loader.sampler.num_replicas, loader.sampler.rank, len(loader)) == (2, 1, 2)


def _align(tmp_path: Path, name: str, *args: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = tmp_path / f"{name}.safetensors"
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "tests/_ddp_align.py", "--out", str(out), "--steps", "4", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(out)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    keys = [k for k in a if not k.endswith("world_size")]
    assert keys and set(keys) <= set(b)
    return max((a[k] - b[k]).abs().max().item() for k in keys)


def _loopback_works() -> bool:
    """DDP's gloo rendezvous needs TCP on 127.0.0.1 (absent under ../shared/tools/no-network)."""
    import socket

    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            socket.create_connection(server.getsockname(), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _loopback_works(), reason="no loopback network: DDP needs a TCP rendezvous")
def test_ddp_on_two_processes_matches_one_process_with_twice_the_batch(tmp_path):
    one = _align(tmp_path, "one", "--devices", "1", "--batch-size", "8")
    two = _align(tmp_path, "two", "--devices", "2", "--batch-size", "4")
    assert int(one["pre.world_size"]) == 1 and int(two["pre.world_size"]) == 2 == int(two["post.world_size"])
    diff = _max_diff(one, two)
    print(f"max |translator difference| 2 processes x 4 vs 1 process x 8: {diff:.3g}")
    assert diff <= ATOL

    # The comparison can fail: without the gradient all-reduce, rank 0 learns from its half only.
    unsynced = _align(tmp_path, "unsynced", "--devices", "2", "--batch-size", "4", "--no-sync")
    assert _max_diff(one, unsynced) > 100 * ATOL


def test_only_rank_zero_writes_into_the_run_folder(tmp_path, monkeypatch):
    from conftest import compose_config
    from lightning.pytorch.utilities import rank_zero_only

    from grafting.run_context import RunContext, global_rank

    cfg = compose_config(["debug=smoke", "resume=true", "logger=csv"], tmp_path)
    out = tmp_path / "run"
    (out / "tuned_block").mkdir(parents=True)
    (out / "tuned_block" / "manifest.json").write_text("{}")
    (out / "checkpoints" / "finetune").mkdir(parents=True)
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # as Lightning sets it in the process it starts with LOCAL_RANK=1
    assert global_rank() == 1
    ctx = RunContext.from_config(cfg)
    assert not ctx.is_global_zero and ctx.output_dir == out and ctx.run_dir != out
    assert (ctx.run_dir / "tuned_block" / "manifest.json").is_file()  # resume decisions match rank 0's
    assert not (ctx.run_dir / "checkpoints").exists()
    assert ctx.checkpoint_dir("align_pre") == out / "checkpoints" / "align_pre"  # shared with rank 0
    ctx.save_results({"stage": "test"})
    assert not (out / "results.json").exists() and not (ctx.run_dir / "results.json").exists()
    scratch = ctx.run_dir
    ctx.finish()
    assert not scratch.exists() and (out / "tuned_block" / "manifest.json").is_file()

    monkeypatch.setattr(rank_zero_only, "rank", 0)
    ctx = RunContext.from_config(cfg)
    assert ctx.is_global_zero and ctx.run_dir == ctx.output_dir == out
