"""grafting.cache: entries written whole, verified on read, damaged ones set aside; processes racing; the CLI."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cache_faults import FAULTS, assert_recomputed, cache_warnings, damage

from grafting.cache import check_entry, lookup, read_manifest, require, store
from grafting.cache.__main__ import main, parse_age
from grafting.cache.entries import _writing
from grafting.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]


def _write(value: str, files: int = 3, pause: float = 0.0):
    """A writer of ``files`` files holding ``value`` (pausing between them, to overlap racing writers)."""
    def write(folder: Path) -> None:
        for i in range(files):
            (folder / f"part{i}.txt").write_text(f"{value}-{i}\n" * 200)
            time.sleep(pause)
    return write


def _read(entry: Path) -> list[str]:
    return sorted((entry / f).read_text() for f in read_manifest(entry)["files"])


def test_an_entry_records_every_file_its_key_and_recipe(tmp_path):
    entry = store(tmp_path / "scores" / "k1", _write("a"), recipe={"seed": 0})
    manifest = read_manifest(entry)
    assert sorted(manifest["files"]) == ["part0.txt", "part1.txt", "part2.txt"]
    assert manifest["cache"]["kind"] == "scores" and manifest["cache"]["key"] == "k1"
    assert manifest["cache"]["recipe"] == {"seed": 0}
    assert lookup(entry) == entry and check_entry(entry) is None
    assert lookup(tmp_path / "scores" / "absent") is None


@pytest.mark.parametrize("fault", [*FAULTS, "edit_manifest", "extra_file", "old_format"])
def test_a_damaged_entry_is_a_miss_with_one_warning_and_is_set_aside(tmp_path, caplog, fault):
    entry = store(tmp_path / "kind" / "key", _write("a"))
    clean = _read(entry)
    if fault == "edit_manifest":  # the recipe edited by hand: the checksum catches it
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["cache"]["recipe"] = {"steps": 10}
        (entry / "manifest.json").write_text(json.dumps(manifest))
        named = entry / "manifest.json"
    elif fault == "extra_file":
        named = entry / "stray.bin"
        named.write_bytes(b"x")
    elif fault == "old_format":  # a folder written before entries had manifests
        (entry / "manifest.json").unlink()
        named = entry / "manifest.json"
    else:
        named = damage(entry, fault)
    with caplog.at_level(logging.WARNING):
        assert lookup(entry) is None
        store(entry, _write("a"))
    assert_recomputed(caplog, entry, named, fault)
    assert _read(entry) == clean


def test_a_bare_file_of_the_old_format_is_set_aside(tmp_path, caplog):
    legacy = tmp_path / "scores" / "key.json"
    legacy.parent.mkdir()
    legacy.write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert lookup(tmp_path / "scores" / "key", legacy=legacy) is None
    assert not legacy.exists() and len(list(legacy.parent.glob("key.json.corrupt-*"))) == 1
    assert len(cache_warnings(caplog)) == 1 and "old format" in cache_warnings(caplog)[0]


def test_a_live_writer_s_temporary_folder_is_left_alone(tmp_path):
    tmp = tmp_path / "kind" / ".key.tmp-host-1-cafe"
    tmp.mkdir(parents=True)
    with _writing(tmp):  # its writer holds the lock: still writing
        assert lookup(tmp_path / "kind" / "key") is None and tmp.is_dir()
    assert lookup(tmp_path / "kind" / "key") is None and not tmp.exists()  # the writer stopped: half-written


def test_an_entry_that_cannot_be_recomputed_is_a_clear_error(tmp_path, caplog):
    entry = store(tmp_path / "kind" / "key", _write("a"))
    named = damage(entry, "flip_byte")
    with pytest.raises(ArtifactError, match=r"kind/key holds no whole cache entry.*rerun the job that made it"):
        require(entry, "rerun the job that made it")
    assert str(named) in cache_warnings(caplog)[0]


def test_a_failed_writer_leaves_nothing(tmp_path):
    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store(tmp_path / "kind" / "key", broken)
    assert list((tmp_path / "kind").iterdir()) == []  # no temporary folder, no entry


# ------------------------------------------------------------------------------------------- processes

def _race(entry: str, value: str, barrier, results) -> None:
    """One job: look the entry up, compute it on a miss; report its content and its cache warnings."""
    counted = []
    handler = logging.Handler()
    handler.emit = lambda record: counted.append(record) if record.levelno >= logging.WARNING else None
    logging.getLogger("grafting.cache").addHandler(handler)
    barrier.wait()
    found = lookup(Path(entry))
    if found is None:
        found = store(Path(entry), _write(value, pause=0.02))
    results.put((_read(found), len(counted)))


@pytest.mark.parametrize("damaged", [False, True])
def test_jobs_computing_one_entry_at_once_all_finish_and_the_entry_is_whole(tmp_path, damaged):
    """Three processes, started together on an empty (or damaged) entry: each finishes with a whole entry,
    the same for all; a damaged entry is warned about and set aside once, not three times."""
    entry = tmp_path / "kind" / "key"
    if damaged:
        damage(store(entry, _write("old")), "flip_byte")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    jobs = [ctx.Process(target=_race, args=(str(entry), "same", barrier, results)) for _ in range(3)]
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=60) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
        assert job.exitcode == 0
    assert check_entry(entry) is None
    assert all(content == _read(entry) for content, _ in outcomes)
    assert sum(n for _, n in outcomes) == (1 if damaged else 0)
    assert len(list(entry.parent.glob("key.corrupt-*"))) == (1 if damaged else 0)
    assert not [p for p in entry.parent.iterdir() if ".tmp-" in p.name]


def test_a_writer_file_is_never_seen_unlocked(tmp_path, monkeypatch):
    """Another job asking "is this temporary folder stale?" at the instant the writer's lock file is created
    (before the writer locks it) must hear no: it would delete a folder that is being written."""
    from grafting.cache import entries

    seen, real_open = [], os.open

    def spying_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if flags & os.O_CREAT and ".tmp-" in str(path):
            seen.append(entries.is_stale_temp(Path(path).parent))
        return fd

    monkeypatch.setattr(entries.os, "open", spying_open)
    store(tmp_path / "kind" / "key", _write("v"))
    assert seen and not any(seen)


def _write_forever(entry: str) -> None:
    def write(folder: Path) -> None:
        (folder / "part0.txt").write_text("half")
        time.sleep(600)
    store(Path(entry), write)


def test_a_job_killed_while_writing_leaves_a_folder_the_next_job_removes(tmp_path, caplog):
    entry = tmp_path / "kind" / "key"
    job = multiprocessing.get_context("fork").Process(target=_write_forever, args=(str(entry),))
    job.start()
    deadline = time.monotonic() + 60
    while not list(entry.parent.glob(".key.tmp-*/part0.txt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp,) = entry.parent.glob(".key.tmp-*")
    assert lookup(entry) is None and tmp.is_dir()  # alive: left alone
    job.kill()
    job.join()
    with caplog.at_level(logging.WARNING):
        assert lookup(entry) is None
        store(entry, _write("a"))
    assert_recomputed(caplog, entry, tmp, "half_written")


# ------------------------------------------------------------------------------------------------ CLI

@pytest.fixture
def full_cache(tmp_path):
    root = tmp_path / "cache"
    store(root / "pretrained" / "tiny-a", _write("m"), recipe={"arch": {"hidden_size": 32}})
    store(root / "scores" / "s1", _write("s"), recipe={"model": "abc"})
    old = store(root / "scores" / "s2", _write("t"))
    stamp = time.time() - 10 * 86400
    os.utime(old, (stamp, stamp))
    manifest = json.loads((old / "manifest.json").read_text())  # written 10 days ago
    manifest["cache"]["created"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(stamp))
    from grafting.cache.entries import checksum

    manifest["checksum"] = checksum(manifest)
    (old / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_ls_lists_entries_per_kind_with_size_age_and_recipe(full_cache, capsys):
    assert main(["--dir", str(full_cache), "ls"]) == 0
    out = capsys.readouterr().out
    assert out.index("pretrained/") < out.index("tiny-a") < out.index("scores/") < out.index("s1")
    assert '"hidden_size":32' in out and "10d" in out and "KB" in out


def test_verify_names_the_damaged_entry_and_exits_non_zero(full_cache, capsys):
    assert main(["--dir", str(full_cache), "verify"]) == 0
    named = damage(full_cache / "scores" / "s1", "flip_byte")
    assert main(["--dir", str(full_cache), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD   scores/s1: {named} is corrupt" in out and "1 damaged entry" in out
    assert main(["--dir", str(full_cache), "verify", "--kind", "pretrained"]) == 0  # the damage is elsewhere


def test_verify_as_a_command_exits_non_zero(full_cache):
    damage(full_cache / "pretrained" / "tiny-a", "flip_byte")
    proc = subprocess.run([sys.executable, "-m", "grafting.cache", "--dir", str(full_cache), "verify"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "BAD   pretrained/tiny-a" in proc.stdout


def test_prune_by_age_by_kind_aside_and_all(full_cache, capsys):
    assert main(["--dir", str(full_cache), "prune", "--older-than", "7d", "--dry-run"]) == 0
    assert (full_cache / "scores" / "s2").is_dir()  # a dry run removes nothing
    assert main(["--dir", str(full_cache), "prune", "--older-than", "7d"]) == 0
    assert not (full_cache / "scores" / "s2").exists() and (full_cache / "scores" / "s1").is_dir()
    damage(full_cache / "scores" / "s1", "flip_byte")
    assert lookup(full_cache / "scores" / "s1") is None  # set aside
    assert main(["--dir", str(full_cache), "prune", "--aside"]) == 0
    assert sorted(p.name for p in (full_cache / "scores").iterdir()) == [".lock"]
    assert main(["--dir", str(full_cache), "prune", "--all", "--kind", "scores"]) == 0
    assert (full_cache / "pretrained" / "tiny-a").is_dir()
    assert main(["--dir", str(full_cache), "prune", "--all"]) == 0
    assert not (full_cache / "pretrained" / "tiny-a").exists()
    assert "removed pretrained/tiny-a" in capsys.readouterr().out


def test_adopt_gives_old_entries_a_manifest(tmp_path, capsys):
    root = tmp_path / "cache"
    old = root / "pretrained" / "tiny-b"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"weights")
    (old / "pretrain_report.json").write_text(json.dumps({"recipe": {"steps": 3}}))
    (root / "scores").mkdir()
    (root / "scores" / "k.json").write_text('{"f_H": 1.0}')
    assert main(["--dir", str(root), "verify"]) == 1
    assert main(["--dir", str(root), "adopt"]) == 0
    assert main(["--dir", str(root), "verify"]) == 0
    assert read_manifest(old)["cache"]["recipe"] == {"steps": 3}
    assert json.loads((lookup(root / "scores" / "k") / "scores.json").read_text()) == {"f_H": 1.0}


def test_ages_parse_with_units():
    assert parse_age("30d") == 30 * 86400 and parse_age("12h") == 12 * 3600 and parse_age("2") == 2 * 86400
    with pytest.raises(Exception, match="use a number and a unit"):
        parse_age("soon")
