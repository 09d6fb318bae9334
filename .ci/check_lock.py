"""CI step: the installed packages are exactly those of requirements.lock (the README's set-up command installs them).

    python .ci/check_lock.py     # exit 1 and list every pin the environment does not match

torch is compared on its public version only: the local label is the build (``+cpu`` in the lock, ``+cu128``
on a GPU machine that installed the same release for its driver).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
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


def main() -> int:
    pins = parse_lock(LOCK.read_text())
    missing = {"torch", "transformers", "peft", "lightning", "datasets", "hydra-core"} - set(pins)
    if missing:
        print(f"{LOCK}: no pin for {sorted(missing)}")
        return 1
    found = drift(pins)
    for name, (locked, have) in sorted(found.items()):
        print(f"{name}: locked {locked}, installed {have}")
    if found:
        print("installed versions differ from requirements.lock: run pip install -c requirements.lock -e '.[dev,cluster]'")
        return 1
    print(f"{len(pins)} packages match {LOCK.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
