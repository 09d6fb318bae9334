"""The lock check that .ci/run runs (.ci/check_lock.py) parses the lock and detects drift."""

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("check_lock", Path(__file__).resolve().parents[1] / ".ci" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_lock)
parse_lock, drift = check_lock.parse_lock, check_lock.drift


def test_the_lock_pins_the_main_packages():
    assert {"torch", "transformers", "peft", "lightning", "datasets", "hydra-core"} <= set(parse_lock(check_lock.LOCK.read_text()))


def test_drift_is_detected():
    pins = parse_lock("# header\nFoo_Bar==1.0\n    # via x\ntorch==2.13.0+cpu\nbaz==2.0 ; python_version >= '3'\n")
    assert pins == {"foo-bar": "1.0", "torch": "2.13.0+cpu", "baz": "2.0"}
    versions = {"foo-bar": "1.0", "torch": "2.13.0+cu128", "baz": "2.0"}
    assert drift(pins, versions.get) == {}  # same torch release, another build
    versions.update({"foo-bar": "1.1", "torch": "2.14.0+cpu"})
    del versions["baz"]
    assert drift(pins, versions.get) == {"foo-bar": ("1.0", "1.1"), "torch": ("2.13.0+cpu", "2.14.0+cpu"),
                                         "baz": ("2.0", None)}
