"""Entry point: `python evaluate.py run_dir=<run>` or `python evaluate.py model=<folder>`. See README.md."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from grafting.console import setup_run_logging
    from grafting.memory import reuse_freed_memory
    from grafting.progress import quiet_library_bars
    from grafting.stages.evaluate import run

    reuse_freed_memory()  # freed tensors are reused, not page-faulted in again
    setup_run_logging()
    quiet_library_bars()
    run(cfg)


if __name__ == "__main__":
    from grafting.cli import rewrite_model_override

    rewrite_model_override()
    main()
