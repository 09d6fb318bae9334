"""What every stage needs from the Hydra config: the run dir, the seed, loggers and a Trainer factory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from grafting.artifacts import write_json_atomic, write_text_atomic
from grafting.errors import ArtifactError

log = logging.getLogger(__name__)
RESULTS = "results.json"


@dataclass
class RunContext:
    """One Hydra job: its config, output folder and loggers (shared by every Trainer of the job)."""

    cfg: DictConfig
    run_dir: Path
    loggers: list = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunContext:
        run_dir = Path(cfg.paths.output_dir)
        if (run_dir / RESULTS).exists() and not cfg.get("overwrite", False) and not cfg.get("resume", False):
            raise ArtifactError(f"{run_dir / RESULTS} exists: this run is finished. Pass overwrite=true to redo it.")
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.get("seed") is not None:  # seed 0 is a valid seed
            L.seed_everything(int(cfg.seed), workers=True)
        loggers = [instantiate(node, **({"name": None} if node.get("name", None) == "" else {}))
                   for node in (cfg.get("logger") or {}).values() if node]
        for lg in loggers:
            if hasattr(lg, "log_hyperparams"):
                lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        return cls(cfg=cfg, run_dir=run_dir, loggers=loggers)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.paths.cache_dir)

    def checkpoint_dir(self, stage: str) -> Path:
        return self.run_dir / "checkpoints" / stage

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
        flat = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for lg in self.loggers:
            lg.log_metrics(flat)
            if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary"):
                lg.experiment.summary.update(flat)

    def save_results(self, results: dict[str, Any], markdown: str | None = None) -> Path:
        write_json_atomic(self.run_dir / RESULTS, results)
        if markdown is not None:
            write_text_atomic(self.run_dir / "results.md", markdown)
        log.info("results written to %s", self.run_dir)
        return self.run_dir / RESULTS

    def finish(self) -> None:
        for lg in self.loggers:
            try:
                lg.finalize("success")
                if hasattr(lg, "experiment") and hasattr(lg.experiment, "finish"):
                    lg.experiment.finish()
            except Exception as err:  # a logger that fails to close must not hide the run's own error
                log.warning("logger %s failed to finish: %s", type(lg).__name__, err)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS).read_text())
