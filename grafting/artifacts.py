"""Saving artifacts safely: safetensors + JSON manifests, written atomically, verified on load."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from grafting.errors import ArtifactError

MANIFEST = "manifest.json"
RESULTS = "results.json"  # what a finished run writes (grafting/run_context.py)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: str | Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (sorted), less the names in ``exclude``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in exclude}


def check_files(folder: str | Path, files: Mapping[str, str]) -> tuple[Path, str] | None:
    """The first file of ``files`` (``{relative path: sha256}``) that is missing or differs, with why; else None."""
    folder = Path(folder)
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return path, "is missing"
        actual = sha256_file(path)
        if actual != expected:
            return path, f"is corrupt: sha256 {actual[:12]}… != manifest {expected[:12]}…"
    return None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it is renamed to ``final``.

    An existing ``final`` is kept unless ``overwrite`` is true, so nothing saved is lost silently.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise ArtifactError(f"{final} already exists; refusing to overwrite it (pass overwrite=True).")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_tensors_with_manifest(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    manifest: dict[str, Any],
    overwrite: bool = False,
    filename: str = "weights.safetensors",
) -> Path:
    """Save ``tensors`` as safetensors plus a manifest holding the file's sha256, atomically."""
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        write_tensors_with_manifest(tmp, tensors, manifest, filename)
    return Path(folder)


def write_tensors_with_manifest(folder: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any],
                                filename: str = "weights.safetensors") -> None:
    """Write ``tensors`` and their manifest into the existing (temporary) ``folder``: the body of the above."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, folder / filename)
    write_json_atomic(folder / MANIFEST, dict(manifest, files={filename: sha256_file(folder / filename)}))


def load_tensors_with_manifest(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a folder written by :func:`save_tensors_with_manifest`, checking every file's sha256 first."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: {folder} is not a saved artifact.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({err}).") from err
    files = manifest.get("files", {})
    bad = check_files(folder, files)
    if bad is not None:
        path, why = bad
        raise ArtifactError(f"{path} {why}" + (f" (listed in {manifest_path})." if why == "is missing" else "."))
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        if name.endswith(".safetensors"):
            tensors.update(load_file(folder / name))
    return tensors, manifest


# --------------------------------------------------------------------------------------- fingerprints

# Config keys that change between environments without changing the weights.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "dtype", "torch_dtype")


def state_fingerprint(state_dict: Mapping[str, torch.Tensor], config_dict: Mapping[str, Any] | None = None) -> str:
    """sha256 over parameter names, dtypes, shapes and bytes (sorted by name) and the config JSON.

    Config keys starting with ``_`` and ``transformers_version``/``dtype`` are ignored: they vary
    with the environment, and the tensors' dtypes are already hashed.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        raw = t.reshape(-1).view(torch.uint8).numpy()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(memoryview(raw))
    config = {k: v for k, v in dict(config_dict or {}).items()
              if not str(k).startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """:func:`state_fingerprint` of ``model.state_dict()`` and ``model.config`` (if it has one)."""
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else None
    return state_fingerprint(model.state_dict(), config_dict)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a finished run."""
    return json.loads((Path(run_dir) / RESULTS).read_text())
