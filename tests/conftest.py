"""Shared fixtures: tiny random models of each family and offline settings. Nothing here reaches a hub."""

from __future__ import annotations

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: the workers are the parallelism, one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (inherited by the subprocesses the tests start)
os.environ.setdefault("GRAFTING_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "grafting-test"))

import pytest  # noqa: E402
import torch  # noqa: E402

from grafting.models.loading import build_random  # noqa: E402

VOCAB = 512

TINY_ARCH = {
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128, rotary_pct=0.25),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=4, vocab_size=VOCAB, n_positions=128),
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128),
}


# Modules whose tests share a costly module fixture (the SmolLM2 de-quantisation, ~30 s): first in the order.
SHARED_FIXTURE_MODULES = ("test_smollm2",)


def pytest_collection_modifyitems(config, items):
    """Modules with slow or end-to-end tests run first (each module kept whole, for its fixtures): under
    ``-n auto --dist worksteal`` a minute-long test then never starts last, while the other worker idles.
    Work-stealing takes tests from the tail of a worker's queue, so the module at the very head runs whole
    on the first worker, and its module fixture is built once."""
    heavy = {item.module.__name__ for item in items if item.get_closest_marker("slow") or item.get_closest_marker("e2e")}
    items.sort(key=lambda item: (item.module.__name__ not in SHARED_FIXTURE_MODULES, item.module.__name__ not in heavy))


def tiny_model(family: str = "gpt_neox", seed: int = 0, **overrides) -> torch.nn.Module:
    return build_random({**TINY_ARCH[family], **overrides}, seed)


@pytest.fixture(params=sorted(TINY_ARCH))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tokenizer():
    """The built-in BPE at a small vocab (trained once per cache dir, a few seconds)."""
    from grafting.models.tokenizer import builtin_tokenizer

    return builtin_tokenizer(VOCAB)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on the second row
    return {"input_ids": ids, "attention_mask": mask}


CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(overrides: list[str], tmp_path: Path, config_name: str = "train"):
    """Compose a config as train.py would, with every output path under ``tmp_path``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={os.environ['GRAFTING_CACHE_DIR']}", *overrides])


def run_job(overrides: list[str], tmp_path: Path, config_name: str = "train") -> Path:
    """Run a job in this process, as ``python train.py <overrides>`` (or ``evaluate.py``) would, and return its
    output folder (``tmp_path/run``). The end-to-end tests (``-m e2e``) run the entry points themselves."""
    cfg = compose_config(overrides, tmp_path, config_name)
    if config_name == "train":  # what Hydra saves beside a run (evaluate.py run_dir= reads it back)
        from omegaconf import OmegaConf

        (tmp_path / "run" / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")
    if config_name == "evaluate":
        from grafting.stages.evaluate import run

        run(cfg, overrides=overrides)
    else:
        from grafting.stages import run

        run(cfg)
    return tmp_path / "run"


def source_copy(tmp_path: Path) -> Path:
    """A copy of the project's sources (package, conf, entry points, this conftest) under ``tmp_path``.

    For tests that drop a plugin file into the package: they write into the copy, so no other test running
    beside them (``pytest -n``) sees a file appear or vanish in the real tree. The bulky assets are linked."""
    import shutil

    root, dest = Path(__file__).resolve().parents[1], tmp_path / "src"
    shutil.copytree(root / "grafting", dest / "grafting", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    (dest / "grafting" / "assets").symlink_to(root / "grafting" / "assets")
    shutil.copytree(root / "conf", dest / "conf")
    (dest / "tests").mkdir()
    for name in ("train.py", "evaluate.py", "tests/conftest.py"):
        shutil.copy2(root / name, dest / name)
    return dest


def in_copy_env(copy: Path) -> dict[str, str]:
    """The environment that makes a subprocess import ``grafting`` from ``copy`` (before the installed one)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                WANDB_MODE="disabled")


def run_in_terminal(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal (isatty() is True); return (rc, output)."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), b"".join(chunks).decode(errors="replace")
