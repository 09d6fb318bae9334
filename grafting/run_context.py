"""What every stage needs from the Hydra config: the run dir, the seed, loggers and a Trainer factory."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from grafting.artifacts import RESULTS, read_results, write_json_atomic, write_text_atomic
from grafting.errors import ArtifactError
from grafting.plain import plain
from grafting.progress import quiet_library_bars
from grafting.provenance import provenance, resolved_config

__all__ = ["RESULTS", "RunContext", "global_rank", "read_results"]

log = logging.getLogger(__name__)
# Not copied into a non-zero rank's scratch folder: shared by all ranks, or logs.
_NOT_MIRRORED = ("checkpoints", "csv", "wandb", ".hydra")


def global_rank() -> int:
    """This process's rank in a distributed run (0 when not distributed), known before any Trainer exists.

    Lightning's DDP launcher starts the other processes with ``LOCAL_RANK`` (and ``NODE_RANK``);
    torchrun sets ``RANK``, SLURM ``SLURM_PROCID``: Lightning's ``rank_zero_only.rank`` reads them.
    The main process of node k > 0 started by hand has only ``NODE_RANK``.
    """
    from lightning.pytorch.utilities import rank_zero_only

    rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    if rank == 0 and "RANK" not in os.environ and "SLURM_PROCID" not in os.environ:
        rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)) or 0)  # > 0: not global zero
    return rank


def _mirror_finished(source: Path, target: Path) -> None:
    """Hard-link (or copy) the finished artifacts of ``source`` into ``target`` so resume reads agree."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in sorted(source.iterdir()) if source.is_dir() else []:
        if entry.name in _NOT_MIRRORED or entry.name.startswith(".") or entry.suffix == ".log":
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=link_or_copy, symlinks=True)
        elif entry.is_file():
            link_or_copy(str(entry), str(target / entry.name))


@dataclass
class RunContext:
    """One Hydra job: its config, output folder and loggers (shared by every Trainer of the job).

    Distributed runs (``trainer=ddp``): Lightning's launcher runs the whole job once per process and
    each process goes through the same stage code, so every ``fit`` happens in all of them together.
    Only global rank 0 writes into the run folder. Other ranks get a private scratch ``run_dir``
    (removed in :meth:`finish`) holding links to what the run folder had finished when they started,
    so ``resume=true`` makes the same decisions in every rank; their artifact writes land there and
    are thrown away. Checkpoints are shared: :meth:`checkpoint_dir` is the run folder's in every rank.
    """

    cfg: DictConfig
    run_dir: Path
    loggers: list = field(default_factory=list)
    output_dir: Path | None = None  # the run folder itself; differs from run_dir on ranks > 0
    rank: int = 0
    provenance: dict | None = None  # versions, git state, device: taken when the job starts

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunContext:
        quiet_library_bars()  # under CI / without a TTY, no "Loading weights" bars either
        output_dir = Path(cfg.paths.output_dir)
        if (output_dir / RESULTS).exists() and not cfg.get("overwrite", False) and not cfg.get("resume", False):
            raise ArtifactError(f"{output_dir / RESULTS} exists: this run is finished. Pass overwrite=true to redo it.")
        output_dir.mkdir(parents=True, exist_ok=True)
        rank, run_dir = global_rank(), output_dir
        if rank > 0:
            run_dir = Path(tempfile.mkdtemp(prefix=f"grafting-rank{rank}-"))
            if cfg.get("resume", False):
                _mirror_finished(output_dir, run_dir)
            log.info("rank %d: artifacts go to the scratch folder %s (rank 0 writes %s)", rank, run_dir, output_dir)
        if cfg.get("seed") is not None:  # seed 0 is a valid seed
            L.seed_everything(int(cfg.seed), workers=True)
        loggers = [instantiate(node, **({"name": None} if node.get("name", None) == "" else {}))
                   for node in (cfg.get("logger") or {}).values() if node]
        prov = provenance()
        for lg in loggers:
            if rank == 0 and hasattr(lg, "log_hyperparams"):
                lg.log_hyperparams({**plain(cfg), "provenance": prov})
        return cls(cfg=cfg, run_dir=run_dir, loggers=loggers, output_dir=output_dir, rank=rank, provenance=prov)

    def reseed(self) -> None:
        """Reset every RNG to ``cfg.seed``; called before each training step is built.

        What ran before must not change what a step draws (e.g. LoRA's initial factors): a cold cache
        pretrains models in-process, a warm one does not, and a cache hit skips a whole fine-tune.
        """
        if self.cfg.get("seed") is not None:  # seed 0 is a valid seed
            L.seed_everything(int(self.cfg.seed), workers=True, verbose=False)

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.paths.cache_dir)

    def checkpoint_dir(self, stage: str) -> Path:
        return (self.output_dir or self.run_dir) / "checkpoints" / stage

    def trainer(self, max_steps: int, stage: str = "train", callbacks: list | None = None,
                **overrides: Any) -> L.Trainer:
        """A Trainer from ``cfg.trainer`` with this job's loggers, a NaN guard and ``last.ckpt`` checkpoints.

        Stages choose their own step budget; checkpoints go to ``<run>/checkpoints/<stage>``.
        """
        from lightning.pytorch.callbacks import ModelCheckpoint

        from grafting.callbacks import FiniteLossGuard

        every = int(self.cfg.get("checkpoint_every", 50))
        checkpoint = ModelCheckpoint(dirpath=self.checkpoint_dir(stage), save_last=True, save_top_k=0,
                                     every_n_train_steps=every, enable_version_counter=False)
        return instantiate(self.cfg.trainer, max_steps=max_steps, logger=self.loggers or False,
                           callbacks=[FiniteLossGuard(stage), checkpoint, *(callbacks or [])],
                           default_root_dir=str(self.run_dir), **overrides)

    def fit(self, module: L.LightningModule, data: Any, stage: str, max_steps: int, **overrides: Any) -> None:
        """``trainer.fit``, continuing from ``<run>/checkpoints/<stage>/last.ckpt`` when ``resume=true``."""
        last = self.checkpoint_dir(stage) / "last.ckpt"
        ckpt_path = str(last) if self.cfg.get("resume", False) and last.is_file() else None
        if ckpt_path:
            log.info("resuming %s from %s", stage, last)
        self.trainer(max_steps, stage, **overrides).fit(module, datamodule=data, ckpt_path=ckpt_path,
                                                         weights_only=True)

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        if not self.is_global_zero:
            return
        flat = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for lg in self.loggers:
            lg.log_metrics(flat)
            if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary"):
                lg.experiment.summary.update(flat)

    def save_results(self, results: dict[str, Any], markdown: str | None = None) -> Path:
        """Write ``results.json`` (with the resolved ``config`` and the job's ``provenance``) and ``results.md``."""
        if not self.is_global_zero:  # rank 0 writes the run's results
            return self.run_dir / RESULTS
        results = {**results, "provenance": self.provenance or provenance()}
        results.setdefault("config", resolved_config(self.cfg))
        write_json_atomic(self.run_dir / RESULTS, results)
        if markdown is not None:
            write_text_atomic(self.run_dir / "results.md", markdown)
        log.info("results written to %s", self.run_dir)
        return self.run_dir / RESULTS

    def finish(self) -> None:
        if not self.is_global_zero:
            if self.output_dir is not None and self.run_dir != self.output_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for lg in self.loggers:
            try:
                lg.finalize("success")
                if hasattr(lg, "experiment") and hasattr(lg.experiment, "finish"):
                    lg.experiment.finish()
            except Exception as err:  # a logger that fails to close must not hide the run's own error
                log.warning("logger %s failed to finish: %s", type(lg).__name__, err)
