"""What produced a result: package versions, the code's git commit, the machine's numerics and the config."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "peft", "lightning", "datasets")
REPO = Path(__file__).resolve().parents[1]  # the checkout that holds this package (when it is one)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers, and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str, cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout ``repo``; both None when it is not one (an installed wheel).

    ``dirty`` is true when tracked files differ from the commit or untracked, not ignored files exist.
    """
    top = _git("rev-parse", "--show-toplevel", cwd=repo)
    if top is None or Path(top).resolve() != repo.resolve():  # e.g. site-packages inside someone's repo
        return {"commit": None, "dirty": None}
    commit = _git("rev-parse", "HEAD", cwd=repo)
    status = _git("status", "--porcelain", cwd=repo)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _cpu_name() -> str:
    try:  # Linux: "AMD EPYC ...", "Intel(R) Xeon(R) ..."
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """The device the run computes on by default, the default dtype and torch's CPU thread count."""
    if torch.cuda.is_available():
        device = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                  "cuda": torch.version.cuda}
    else:
        device = {"type": "cpu", "name": _cpu_name(), "count": 1}
    return {**device, "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
            "threads": torch.get_num_threads(), "host": platform.node(), "platform": platform.platform()}


def provenance(config: Any = None) -> dict[str, Any]:
    """Versions, git commit and dirty flag, device, and the resolved ``config`` when one is given."""
    out: dict[str, Any] = {"versions": package_versions(), "git": git_state(), "device": device_info()}
    if config is not None:
        out["config"] = resolved_config(config)
    return out


def resolved_config(config: Any) -> dict[str, Any]:
    """``config`` as plain data, interpolations resolved (left as written if one only resolves inside Hydra)."""
    from grafting.plain import plain

    try:
        return plain(config)
    except Exception:  # e.g. ${hydra:...} outside a Hydra job
        return plain(config, resolve=False)


def code_identity(prov: dict[str, Any] | None) -> dict[str, Any]:
    """The fields that must agree for results to be averaged: git commit, dirty flag and every version."""
    prov = prov or {}
    git, versions = prov.get("git") or {}, prov.get("versions") or {}
    return {"git.commit": git.get("commit"), "git.dirty": git.get("dirty"),
            **{f"versions.{k}": v for k, v in sorted(versions.items())}}
