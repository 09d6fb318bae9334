"""The console of a run: each line once; this package's INFO lines and every warning reach the terminal, library
INFO lines, tips and library warnings go to the log file only (grafting/console.py)."""

import io
import logging
import warnings

import pytest

import grafting.console as console_module
from grafting.console import FILE_ONLY, ConsoleFilter, quiet_libraries, setup_run_logging


@pytest.fixture
def handlers():
    """A terminal and a log file on the root logger, as Hydra's job logging sets them; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
                                            for n in ("lightning", "lightning.pytorch", "lightning.fabric")})
    terminal, logfile = io.StringIO(), io.StringIO()
    console, file = logging.StreamHandler(terminal), logging.FileHandler("/dev/null")
    file.stream = logfile  # a FileHandler (not a terminal) that writes to memory
    root.handlers[:] = [console, file]
    root.setLevel(logging.INFO)
    yield terminal, logfile
    from transformers.utils import logging as hf_logging

    hf_logging.enable_default_handler()
    hf_logging.disable_propagation()
    root.handlers[:], root.level = saved[0], saved[1]
    for name, (hs, propagate) in saved[2].items():
        logging.getLogger(name).handlers[:] = hs
        logging.getLogger(name).propagate = propagate
    logging.captureWarnings(False)
    console_module._CONFIGURED = False


def test_each_line_once_and_only_ours_on_the_terminal(handlers):
    # probes: fresh child loggers at INFO (other tests may have quietened or disabled the libraries' own ones)
    for name in ("lightning.pytorch.console_probe", "grafting.console_probe", "transformers.console_probe"):
        logging.getLogger(name).setLevel(logging.INFO)
    terminal, logfile = handlers
    setup_run_logging()
    quiet_libraries()
    logging.getLogger("lightning.pytorch.console_probe").info("GPU available: False")
    logging.getLogger("lightning.pytorch.console_probe").info("💡 Tip: try a cloud product")
    logging.getLogger("grafting.console_probe").info("1/4 fine-tune")
    logging.getLogger("grafting.console_probe").info("Host: {...}", extra=FILE_ONLY)
    logging.getLogger("transformers.console_probe").warning("a real problem")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("`old_api` is deprecated", FutureWarning, stacklevel=1)
    shown, kept = terminal.getvalue(), logfile.getvalue()
    assert shown.splitlines() == ["1/4 fine-tune", "a real problem"]
    for line in ("GPU available: False", "Tip: try", "1/4 fine-tune", "Host: {...}", "a real problem", "FutureWarning: `old_api`"):
        assert kept.count(line) == 1, (line, kept)


def test_the_filter_alone():
    def record(name, level, msg="x", **extra):
        r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
        r.__dict__.update(extra)
        return r

    keep = ConsoleFilter().filter
    assert keep(record("grafting.x", logging.INFO)) and keep(record("lightning", logging.WARNING))
    assert not keep(record("lightning", logging.INFO)) and not keep(record("py.warnings", logging.WARNING))
    assert not keep(record("grafting.x", logging.INFO, console=False))
