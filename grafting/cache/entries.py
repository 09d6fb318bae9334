"""One cache entry on disk: written atomically with a manifest of sha256s, verified on every read.

An entry is a folder ``<cache>/<kind>/<name>`` holding its files and ``manifest.json``:

- ``files``: the sha256 of every other file in the folder;
- ``cache``: the kind, the key (the folder's name), the recipe that made it, when it was written;
- ``checksum``: the sha256 of the rest of the manifest, so a damaged manifest is caught too.

A payload may bring its own ``manifest.json`` (a tuned block's, with ``kind`` and ``layer``): its fields are
kept and these are added. :func:`lookup` returns a verified entry or None; a damaged entry (a flipped
byte, a missing or unreadable manifest, a missing or unlisted file) is a miss: one warning names the file,
the entry is moved aside to ``<name>.corrupt-<time>`` and the caller recomputes it. :func:`store` writes
into a temporary folder beside the entry and renames it into place, so two jobs computing the same entry
both finish and the entry is whole; a whole entry that another job wrote first is kept.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafting.artifacts import MANIFEST, check_files, file_hashes, write_json_atomic
from grafting.errors import ArtifactError

try:
    import fcntl
except ImportError:  # Windows: the rename alone keeps entries whole
    fcntl = None

log = logging.getLogger(__name__)
FORMAT = 1
LOCK = ".lock"  # one lock file per kind folder, held only to publish or set aside an entry (a rename)
ASIDE = ".corrupt-"  # damaged entries are renamed <name>.corrupt-<time>, never deleted without being asked
TEMP = ".tmp-"  # a writer's temporary folder: .<name>.tmp-<host>-<pid>-<random>
WRITER = ".writer"  # in a temporary folder: locked by its writer until the folder is renamed into place
STALE_S = 24 * 3600  # a temporary folder without a lock to judge by (old format, no locks) is stale after this


def checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest less its ``checksum`` field (sorted keys)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_manifest(entry: Path) -> dict[str, Any]:
    """The entry's manifest; ``ArtifactError`` naming the file when it is missing or unreadable."""
    path = Path(entry) / MANIFEST
    manifest, why = _manifest(path)
    if manifest is None:
        raise ArtifactError(f"{path} {why}")
    return manifest


def _manifest(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``(manifest, "")``, or ``(None, why it cannot be used)``."""
    if not path.is_file():
        return None, ("is missing (a damaged entry, or one made before entries had manifests: "
                      "`python -m grafting.cache adopt` keeps those)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"is not valid JSON ({err})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, "lists no files"
    if "cache" in manifest and manifest.get("checksum") != checksum(manifest):
        return None, "is damaged: it does not match its checksum"
    return manifest, ""


def check_entry(entry: Path) -> tuple[Path, str] | None:
    """What is wrong with ``entry`` (the file, and why), or None when every file matches its manifest."""
    entry = Path(entry)
    if not entry.is_dir():
        return entry, "is not a folder (an entry in an old format)"
    manifest, why = _manifest(entry / MANIFEST)
    if manifest is None:
        return entry / MANIFEST, why
    bad = check_files(entry, manifest["files"])
    if bad is not None:
        return bad
    listed = set(manifest["files"]) | {MANIFEST}
    extra = sorted(p for p in entry.rglob("*") if p.is_file() and p.relative_to(entry).as_posix() not in listed)
    return (extra[0], "is not listed in the manifest") if extra else None


def lookup(entry: str | Path, *, legacy: str | Path | None = None) -> Path | None:
    """``entry`` when it is whole (every file verified), else None: the caller recomputes it.

    A damaged entry logs one warning naming the file and is moved aside; so is ``legacy`` (the same
    entry in an old format, e.g. a bare JSON file) when it exists. A temporary folder left beside the
    entry by a job that stopped while writing it is removed with a warning.
    """
    entry = Path(entry)
    if legacy is not None and Path(legacy).exists():
        _set_aside(Path(legacy), (Path(legacy), "is an entry in an old format (no manifest)"))
    if entry.exists():
        problem = check_entry(entry)
        if problem is None:
            return entry
        if _set_aside(entry, problem):  # another job replaced it with a whole entry meanwhile
            return entry
    if entry.parent.is_dir():
        remove_stale_temps(entry)
    return None


def require(entry: str | Path, remedy: str) -> Path:
    """:func:`lookup` for an entry the caller cannot recompute: ``ArtifactError`` naming it and ``remedy``."""
    found = lookup(entry)
    if found is None:
        raise ArtifactError(f"{entry} holds no whole cache entry (see the warning above, if any), and it cannot be "
                            f"recomputed here: {remedy}")
    return found


def store(entry: str | Path, write: Callable[[Path], Any], *, recipe: Any = None) -> Path:
    """Write an entry: ``write(folder)`` fills a temporary folder, which gets its manifest and is renamed.

    ``recipe`` (JSON-able) is what made the entry, for ``python -m grafting.cache ls``. When another job
    wrote a whole entry first (same key, same numbers), that copy is kept and this one dropped; a damaged
    one is moved aside. Returns ``entry``.
    """
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}{TEMP}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with _writing(tmp):
            write(tmp)
            (tmp / WRITER).unlink()  # not part of the entry (the lock stays held through the open file)
            seal(tmp, kind=entry.parent.name, key=entry.name, recipe=recipe)
            with _locked(entry.parent):
                if entry.exists():
                    problem = check_entry(entry)
                    if problem is None:
                        log.info("cache: %s was written by another job meanwhile; keeping that copy", entry)
                        return entry
                    _set_aside_locked(entry, problem)
                try:
                    os.replace(tmp, entry)
                except OSError:  # no lock on this file system and another job renamed its copy first
                    if check_entry(entry) is not None:
                        raise
        return entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seal(folder: Path, kind: str, key: str, recipe: Any = None) -> dict[str, Any]:
    """Write ``folder``'s manifest: its own fields (if any) plus every file's sha256, the key and recipe."""
    path = Path(folder) / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["files"] = file_hashes(folder)
    manifest["cache"] = {"format": FORMAT, "kind": kind, "key": key,
                         "recipe": json.loads(json.dumps(recipe, default=str)),
                         "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    manifest["checksum"] = checksum(manifest)
    write_json_atomic(path, manifest)
    return manifest


# ------------------------------------------------------------------------------------ moving things aside

def _set_aside(entry: Path, problem: tuple[Path, str]) -> bool:
    """Move a damaged ``entry`` aside (under the kind's lock) and warn once; True if it turned whole meanwhile."""
    with _locked(entry.parent):
        if not entry.exists():
            return False  # another job moved it aside (and warned) first
        if entry.is_dir() and check_entry(entry) is None:
            return True
        _set_aside_locked(entry, problem)
        return False


def _set_aside_locked(entry: Path, problem: tuple[Path, str]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    aside = entry.with_name(f"{entry.name}{ASIDE}{stamp}")
    os.replace(entry, aside)
    path, why = problem
    log.warning("cache: %s %s; moved the entry aside to %s; it will be recomputed", path, why, aside.name)
    return aside


def remove_stale_temps(entry: Path, max_age_s: float = STALE_S) -> list[Path]:
    """Remove the temporary folders beside ``entry`` whose writer stopped (each with a warning)."""
    removed = []
    for tmp in sorted(entry.parent.glob(f".{entry.name}.*")):
        if tmp.is_dir() and is_stale_temp(tmp, max_age_s):
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("cache: %s is a half-written entry left by a job that stopped; removed it; %s will be "
                        "recomputed", tmp, entry.name)
            removed.append(tmp)
    return removed


def is_stale_temp(tmp: Path, max_age_s: float = STALE_S) -> bool:
    """A temporary folder whose writer stopped: nobody holds its ``WRITER`` lock (else: older than ``max_age_s``)."""
    writer = tmp / WRITER
    if fcntl is not None and writer.is_file():
        try:
            fd = os.open(writer, os.O_RDONLY)
        except FileNotFoundError:  # its writer just finished writing
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:  # held: the writer is at work
            return False
        except OSError:  # a file system without locks: judge by age
            pass
        finally:
            os.close(fd)
    try:
        return time.time() - tmp.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _writing(tmp: Path) -> Iterator[None]:
    """Hold the lock on ``tmp``'s ``WRITER`` file while the entry is written (the process's death releases it).

    The file is locked under another name and then renamed to ``WRITER``: a job that finds ``WRITER`` always
    finds it locked, never in the instant between its creation and its lock (when it would look stale)."""
    unlocked = tmp / f"{WRITER}-{os.getpid()}"
    fd = os.open(unlocked, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(unlocked, tmp / WRITER)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(kind_dir: Path) -> Iterator[None]:
    """Hold the kind folder's lock file (a short critical section: check, then rename)."""
    if fcntl is None:
        yield
        return
    with open(Path(kind_dir) / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: the rename is still atomic
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
