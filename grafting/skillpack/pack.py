"""The SkillPack on-disk format: a directory of safetensors shards plus ``manifest.json``.

Layout::

    my_pack/
      manifest.json
      skillpack-00000.safetensors     # tensors keyed "<param name>::<tensor name>"
      skillpack-00001.safetensors     # more shards only past ``shard_bytes``

``manifest.json``::

    {"format": "grafting-skillpack", "format_version": 1,
     "base_fingerprint": "<sha256 hex of the base model, or null>",
     "metadata": {...free-form, JSON...},
     "modules": {"<param name>": {"file": "skillpack-00000.safetensors", "tensors": ["A", "B"],
                                  "method": "svd_rank", "params": {...}, "shape": [m, n],
                                  "dtype": "float32", "kind": "attention", ...method extras}},
     "files": {"skillpack-00000.safetensors": {"sha256": "<hex>", "nbytes": 1234}},
     "total_bytes": 1234}

``total_bytes`` counts the tensor files; :func:`pack_nbytes` measures everything on disk, manifest
included. Nothing is pickled. Every file's size and sha256 are checked before its bytes are parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import Tensor

from grafting.artifacts import model_fingerprint, state_fingerprint  # noqa: F401  (re-exported)
from grafting.skillpack.compressors import CompressedTensor, decompress

FORMAT = "grafting-skillpack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SEP = "::"
DEFAULT_SHARD_BYTES = 2**30
_RESERVED = ("file", "tensors")


class PackError(ValueError):
    """A SkillPack cannot be read or used."""


class PackIntegrityError(PackError):
    """A pack file is missing, truncated, altered, or the manifest is unreadable."""


class FingerprintMismatchError(PackError):
    """A pack was built against a different base model."""


class PackExistsError(FileExistsError):
    """Refusing to overwrite an existing pack."""


@dataclass
class SkillPack:
    """Compressed per-parameter deltas plus the fingerprint of the base they apply to."""

    modules: dict[str, CompressedTensor]
    base_fingerprint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in memory."""
        return sum(c.nbytes for c in self.modules.values())

    def decompress(self) -> dict[str, Tensor]:
        """Name -> dense float32 delta."""
        return {name: decompress(c) for name, c in self.modules.items()}


# Fingerprints live in grafting.artifacts (tuned blocks use them too); re-exported here.


# ---------------------------------------------------------------------------------------------- save


def _is_pack_dir(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_pack(
    compressed: Mapping[str, CompressedTensor] | SkillPack,
    base_fingerprint: str | None,
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    metadata: Mapping[str, Any] | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Writes a pack directory atomically (temporary directory, then rename).

    Args:
        compressed: name -> CompressedTensor, or a :class:`SkillPack` (its metadata is kept).
        base_fingerprint: :func:`model_fingerprint` of the base the deltas apply to (None: unchecked).
        path: the pack directory to create.
        overwrite: replace an existing pack. Only a directory holding a SkillPack manifest (or an
            empty one) is ever replaced, so a wrong path cannot delete unrelated files.
        metadata: free-form JSON-able dict stored in the manifest.
        shard_bytes: start a new safetensors file past this many bytes (a module is never split).

    Returns:
        The pack path.
    """
    path = Path(path)
    if isinstance(compressed, SkillPack):
        metadata = {**compressed.metadata, **dict(metadata or {})}
        compressed = compressed.modules
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise PackExistsError(f"{path} already exists; pass overwrite=True to replace it")
        if not (path.is_dir() and (_is_pack_dir(path) or not any(path.iterdir()))):
            raise PackExistsError(f"{path} exists and is not a SkillPack; refusing to replace it")

    # Plan shards and the manifest before touching the disk, so bad meta fails early.
    shards: list[dict[str, Tensor]] = [{}]
    modules: dict[str, Any] = {}
    size = 0
    for name in sorted(compressed):
        c = compressed[name]
        if any(k in c.meta for k in _RESERVED):
            raise ValueError(f"{name}: meta may not use reserved keys {_RESERVED}")
        if shards[-1] and size + c.nbytes > shard_bytes:
            shards.append({})
            size = 0
        size += c.nbytes
        for tname, t in c.tensors.items():
            shards[-1][f"{name}{SEP}{tname}"] = t.detach().cpu().contiguous()
        modules[name] = {**c.meta, "file": len(shards) - 1, "tensors": sorted(c.tensors)}
    try:
        json.dumps(modules)
        json.dumps(dict(metadata or {}))
    except TypeError as err:
        raise ValueError(f"pack meta/metadata must be JSON-serialisable: {err}") from err

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        files: dict[str, Any] = {}
        names = [f"skillpack-{i:05d}.safetensors" for i in range(len(shards))]
        for fname, tensors in zip(names, shards, strict=True):
            data = safetensors.torch.save(tensors, metadata={"format": FORMAT})
            _write(tmp / fname, data)
            files[fname] = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data)}
        for entry in modules.values():
            entry["file"] = names[entry["file"]]
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_fingerprint": base_fingerprint,
                    "metadata": dict(metadata or {}), "modules": modules, "files": files,
                    "total_bytes": sum(f["nbytes"] for f in files.values())}
        _write(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, path)
            except OSError as err:  # someone created a non-empty path meanwhile
                raise PackExistsError(f"{path} appeared while saving; not overwritten") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------- load


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise PackIntegrityError(f"{path}: no SkillPack directory here")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise PackIntegrityError(f"{mpath}: manifest file is missing")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackIntegrityError(f"{mpath}: manifest is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackIntegrityError(f"{mpath}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackIntegrityError(f"{mpath}: format_version {version!r} is not supported (<= {FORMAT_VERSION})")
    for key in ("modules", "files"):
        if not isinstance(manifest.get(key), dict):
            raise PackIntegrityError(f"{mpath}: manifest lacks '{key}'")
    return manifest


def _read_verified(path: Path, fname: str, info: Mapping[str, Any]) -> bytes:
    """The bytes of one pack file, after checking its size and sha256 against the manifest."""
    if Path(fname).name != fname or fname in ("", ".", ".."):
        raise PackIntegrityError(f"{path / MANIFEST}: illegal file name {fname!r}")
    fpath = path / fname
    if not fpath.is_file():
        raise PackIntegrityError(f"{fpath}: pack file {fname} is missing")
    data = fpath.read_bytes()
    if len(data) != info.get("nbytes"):
        raise PackIntegrityError(f"{fpath}: pack file {fname} has {len(data)} bytes, manifest says "
                                 f"{info.get('nbytes')} (truncated or altered)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.get("sha256"):
        raise PackIntegrityError(f"{fpath}: sha256 mismatch for pack file {fname} (corrupted or altered): "
                                 f"{digest} != {info.get('sha256')}")
    return data


def check_fingerprint(pack_fingerprint: str | None, expected: str | None, where: str = "pack") -> None:
    """Raises :class:`FingerprintMismatchError` when both fingerprints are known and differ."""
    if expected is not None and pack_fingerprint is not None and pack_fingerprint != expected:
        raise FingerprintMismatchError(
            f"{where} was built for base model {pack_fingerprint[:16]}..., but the base here is "
            f"{expected[:16]}...; apply it only to the model it was made from")


def load_pack(path: str | os.PathLike, expected_fingerprint: str | None = None) -> SkillPack:
    """Reads and verifies a pack directory.

    Args:
        path: the pack directory.
        expected_fingerprint: fingerprint of the base it will be applied to; a mismatch raises
            :class:`FingerprintMismatchError`.

    Raises:
        PackIntegrityError: missing/truncated/altered file or bad manifest, naming the file.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    check_fingerprint(manifest.get("base_fingerprint"), expected_fingerprint, where=f"pack {path}")
    loaded: dict[str, dict[str, Tensor]] = {}
    for fname, info in manifest["files"].items():
        data = _read_verified(path, fname, info)
        try:
            loaded[fname] = safetensors.torch.load(data)
        except Exception as err:  # a file with a matching hash but unparsable content
            raise PackIntegrityError(f"{path / fname}: not a readable safetensors file ({err})") from err
    modules: dict[str, CompressedTensor] = {}
    for name, entry in manifest["modules"].items():
        fname = entry.get("file")
        if fname not in loaded:
            raise PackIntegrityError(f"{path / MANIFEST}: module {name} points to unlisted file {fname!r}")
        try:
            tensors = {t: loaded[fname][f"{name}{SEP}{t}"] for t in entry["tensors"]}
        except KeyError as err:
            raise PackIntegrityError(f"{path / fname}: tensor {err} of module {name} is missing") from err
        meta = {k: v for k, v in entry.items() if k not in _RESERVED}
        modules[name] = CompressedTensor(tensors, meta)
    return SkillPack(modules, manifest.get("base_fingerprint"), manifest.get("metadata") or {}, path)


def pack_nbytes(path: str | os.PathLike) -> int:
    """Bytes the pack occupies on disk: every file in the directory, manifest included."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
