"""A clean console for train.py and evaluate.py: each line once, and only what a user reads during a run.

The terminal gets this package's INFO lines (the phases, where results went), every WARNING or worse, and the
tables and progress bars (printed, not logged). Everything else, Lightning's INFO lines ("GPU available", "Seed
set to"), its tips, and the warnings libraries raise (deprecations, "module(s) in eval mode"), goes to the
run's log file (``<run>/train.log``, Hydra's file handler) and nowhere else.
"""

from __future__ import annotations

import logging

#: Loggers whose lines the terminal shows at INFO (everything logs WARNING and above to the terminal).
OWN = ("grafting", "__main__")
#: Library loggers that install their own console handler: their lines go through the root's handlers instead.
SELF_HANDLED = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


class ConsoleFilter(logging.Filter):
    """Keep a record on the terminal when it is this package's, or a warning; never a library's warning
    captured from :mod:`warnings` (``py.warnings``) or a tip."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings" or "Tip:" in record.getMessage():
            return False
        if getattr(record, "console", True) is False:  # detail meant for the log file: log.info(..., extra=FILE_ONLY)
            return False
        return record.levelno >= logging.WARNING or record.name.startswith(OWN)


#: ``log.info(..., extra=FILE_ONLY)``: written to the run's log file, not shown on the terminal.
FILE_ONLY = {"console": False}


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


_CONFIGURED = False


def setup_run_logging() -> None:
    """Call once the job's logging is configured (inside ``@hydra.main``): filter the terminal handlers and log
    library warnings instead of printing them. Cheap: a bad config still fails in about a second."""
    global _CONFIGURED
    for handler in logging.getLogger().handlers:
        if _is_console(handler) and not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())
    logging.captureWarnings(True)
    _CONFIGURED = True


def quiet_libraries() -> None:
    """After the config checks, before any training: send Lightning's and transformers' lines through the root's
    handlers (once each) instead of their own console handlers. Does nothing unless :func:`setup_run_logging` ran
    (a library user's logging is theirs)."""
    if not _CONFIGURED:
        return
    import lightning  # noqa: F401  (it adds its console handler on import, whatever the logging config says)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()  # transformers' own "[transformers] ..." handler
    hf_logging.enable_propagation()
    for name in SELF_HANDLED:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if _is_console(h)]:
            logger.removeHandler(handler)
        logger.propagate = True
