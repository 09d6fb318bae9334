"""The installed packages are exactly those of requirements.lock (the README's set-up command installs them).

torch is compared on its public version only: the local label is the build (``+cpu`` in the lock, ``+cu128``
on a GPU machine that installed the same release for its driver).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
BUILD_VARIANTS = {"torch"}  # packages whose local version label names a build, not a release


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """``{normalized name: version}`` of every ``name==version`` line (comments and markers ignored)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line!r}"
            pins[_normalize(name.split("[", 1)[0])] = version.strip()
    return pins


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def drift(pins: dict[str, str], installed=_installed) -> dict[str, tuple[str, str | None]]:
    """``{name: (locked, installed)}`` for every pin the environment does not match."""
    out = {}
    for name, locked in pins.items():
        have = installed(name)
        same = have is not None and (
            Version(have).public == Version(locked).public if name in BUILD_VARIANTS else Version(have) == Version(locked))
        if not same:
            out[name] = (locked, have)
    return out


def test_installed_versions_equal_the_lock():
    pins = parse_lock(LOCK.read_text())
    assert {"torch", "transformers", "peft", "lightning", "datasets", "hydra-core"} <= set(pins)
    assert drift(pins) == {}, "installed versions differ from requirements.lock: run " \
                              "pip install -c requirements.lock -e '.[dev,cluster]'"


def test_drift_is_detected():
    pins = parse_lock("# header\nFoo_Bar==1.0\n    # via x\ntorch==2.13.0+cpu\nbaz==2.0 ; python_version >= '3'\n")
    assert pins == {"foo-bar": "1.0", "torch": "2.13.0+cpu", "baz": "2.0"}
    versions = {"foo-bar": "1.0", "torch": "2.13.0+cu128", "baz": "2.0"}
    assert drift(pins, versions.get) == {}  # same torch release, another build
    versions.update({"foo-bar": "1.1", "torch": "2.14.0+cpu"})
    del versions["baz"]
    assert drift(pins, versions.get) == {"foo-bar": ("1.0", "1.1"), "torch": ("2.13.0+cpu", "2.14.0+cpu"),
                                         "baz": ("2.0", None)}
