"""Entry point: `python train.py [group=option ...] [key=value ...] [-m]`. See README.md."""

import hydra
from omegaconf import DictConfig

from grafting.cli import rewrite_path_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from grafting.console import setup_run_logging
    from grafting.memory import reuse_freed_memory
    from grafting.stages import run

    reuse_freed_memory()  # in the process that runs the job (a sweep's worker too): freed tensors are reused
    setup_run_logging()
    run(cfg)


if __name__ == "__main__":
    rewrite_path_overrides()
    main()
