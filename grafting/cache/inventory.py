"""What the cache holds: its entries by kind, with size, age and recipe; verifying, pruning, adopting them."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafting.artifacts import MANIFEST
from grafting.cache import entries
from grafting.cache.entries import ASIDE, LOCK, TEMP, _locked, _manifest, is_stale_temp, seal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """A folder or file of the cache: an ``entry``, an entry set ``aside`` (damaged) or a ``temp`` folder."""

    path: Path
    kind: str
    state: str  # entry | aside | temp

    @property
    def size(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    @property
    def created(self) -> float:
        """When the entry was written (its manifest says so), else its folder's modification time."""
        manifest, _ = _manifest(self.path / MANIFEST) if self.path.is_dir() else (None, "")
        stamp = (manifest or {}).get("cache", {}).get("created")
        if stamp:
            return datetime.datetime.fromisoformat(stamp).timestamp()
        return self.path.stat().st_mtime

    @property
    def recipe(self) -> Any:
        manifest, _ = _manifest(self.path / MANIFEST) if self.path.is_dir() else (None, "")
        return (manifest or {}).get("cache", {}).get("recipe")


def items(root: Path, kinds: list[str] | None = None) -> Iterator[Item]:
    """Every item under ``root`` (kind folders in order; lock files skipped), optionally only ``kinds``."""
    if not root.is_dir():
        return
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if kinds and kind_dir.name not in kinds:
            continue
        for path in sorted(kind_dir.iterdir()):
            if path.name == LOCK:
                continue
            if path.name.startswith("."):
                state = "temp"
            elif ASIDE in path.name:
                state = "aside"
            else:
                state = "entry"
            yield Item(path, kind_dir.name, state)


def verify(root: Path, kinds: list[str] | None = None) -> list[tuple[Item, str]]:
    """``(item, "ok" or what is wrong)`` for every entry; set-aside and temporary folders are listed as such."""
    report = []
    for item in items(root, kinds):
        if item.state == "entry":
            problem = entries.check_entry(item.path)
            report.append((item, "ok" if problem is None else f"{problem[0]} {problem[1]}"))
        else:
            stale = item.state == "temp" and is_stale_temp(item.path)
            report.append((item, "set aside (damaged)" if item.state == "aside" else
                           "half-written by a job that stopped" if stale else "being written"))
    return report


def prune(root: Path, kinds: list[str] | None = None, older_than_s: float | None = None, everything: bool = False,
          aside_only: bool = False, dry_run: bool = False) -> list[Item]:
    """Remove entries (and set-aside or stale temporary folders) older than ``older_than_s``, or all.

    ``aside_only``: only what is set aside or left half-written. A folder another job is writing now is
    never removed. An entry is renamed out of sight under the kind's lock before it is deleted.
    """
    now = time.time()
    removed = []
    for item in items(root, kinds):
        if item.state == "temp" and not is_stale_temp(item.path, max_age_s=older_than_s or 0.0):
            continue
        if aside_only and item.state == "entry":
            continue
        if not (everything or aside_only) and (older_than_s is None or now - item.created < older_than_s):
            continue
        removed.append(item)
        if not dry_run:
            _remove(item)
    return removed


def _remove(item: Item) -> None:
    gone = item.path.with_name(f".{item.path.name}.pruning-{os.getpid()}")
    with _locked(item.path.parent):
        os.replace(item.path, gone)
    if gone.is_dir():
        shutil.rmtree(gone, ignore_errors=True)
    else:
        gone.unlink(missing_ok=True)


def adopt(root: Path, kinds: list[str] | None = None) -> list[Path]:
    """Give a manifest to every entry written before entries had one, trusting its files as they are now.

    Only on the user's request (``python -m grafting.cache adopt``): it keeps expensive old entries (a
    pretrained model) that would otherwise be recomputed. A bare ``scores/<key>.json`` becomes
    ``scores/<key>/scores.json``. Entries whose manifest exists but is damaged are left alone.
    """
    adopted = []
    for item in items(root, kinds):
        if item.state != "entry" or (item.path / MANIFEST).exists():
            continue
        path = item.path
        if path.is_file() and path.suffix == ".json" and item.kind == "scores":
            folder = path.with_suffix("")
            tmp = path.with_name(f".{folder.name}{TEMP}adopt-{os.getpid()}-0")
            tmp.mkdir()
            shutil.copy2(path, tmp / "scores.json")
            seal(tmp, item.kind, folder.name, recipe={"adopted": path.name})
            with _locked(path.parent):
                os.replace(tmp, folder)
                path.unlink()
            adopted.append(folder)
        elif path.is_dir():
            report = next((p for p in sorted(path.glob("*report.json"))), None)
            recipe = _json(report).get("recipe") if report else None
            seal(path, item.kind, path.name, recipe=recipe)
            adopted.append(path)
    return adopted


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
