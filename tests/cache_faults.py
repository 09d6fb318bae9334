"""Damage a cache entry the ways the fault-injection tests need, and check what a rerun must do about it."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from grafting.artifacts import MANIFEST
from grafting.cache import check_entry
from grafting.cache.entries import WRITER

# A flipped byte in the largest data file, a manifest cut in half, a data file deleted, a half-written
# temporary folder left by a job that was killed while writing (and no entry).
FAULTS = ("flip_byte", "truncate_manifest", "delete_file", "half_written")


def damage(entry: Path, fault: str) -> Path:
    """Apply ``fault`` to the cache entry ``entry``; return the path the warning has to name."""
    data = sorted((p for p in entry.rglob("*") if p.is_file() and p.name != MANIFEST),
                  key=lambda p: (-p.stat().st_size, p.name))
    if fault == "flip_byte":
        raw = bytearray(data[0].read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data[0].write_bytes(bytes(raw))
        return data[0]
    if fault == "truncate_manifest":
        manifest = entry / MANIFEST
        manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
        return manifest
    if fault == "delete_file":
        data[0].unlink()
        return data[0]
    if fault == "half_written":  # what a writer killed mid-way leaves: its temporary folder, and no entry
        tmp = entry.parent / f".{entry.name}.tmp-{socket.gethostname()}-4242-0badc0de"
        os.replace(entry, tmp)
        (tmp / MANIFEST).unlink()
        (tmp / WRITER).touch()  # its writer's lock file, which nobody holds any more
        biggest = tmp / data[0].relative_to(entry)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
        return tmp
    raise ValueError(fault)


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("grafting.cache")
            and r.levelno >= logging.WARNING]


def assert_recomputed(caplog, entry: Path, named: Path, fault: str) -> None:
    """One warning naming ``named`` and saying so; the entry whole again; the damaged copy set aside."""
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(named) in warnings[0] and "recomputed" in warnings[0], warnings[0]
    assert check_entry(entry) is None
    aside = list(entry.parent.glob(f"{entry.name}.corrupt-*"))
    assert len(aside) == (0 if fault == "half_written" else 1)
    assert not list(entry.parent.glob(f".{entry.name}.tmp-*"))  # nothing half-written left behind
