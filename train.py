"""Entry point: `python train.py [group=option ...] [key=value ...] [-m]`. See README.md."""

import hydra
from omegaconf import DictConfig

from grafting.cli import rewrite_path_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from grafting.console import setup_run_logging
    from grafting.stages import run

    setup_run_logging()
    run(cfg)


if __name__ == "__main__":
    from grafting.memory import reuse_freed_memory

    reuse_freed_memory()  # a training step's freed tensors are reused, not page-faulted in again
    rewrite_path_overrides()
    main()
