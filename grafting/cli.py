"""Command-line conveniences shared by train.py and evaluate.py."""

from __future__ import annotations

import sys
from pathlib import Path


def rewrite_path_overrides(argv: list[str] | None = None) -> list[str]:
    """Let ``host=/some/folder`` (or ``donor=``) name a saved model directly.

    Hydra reads ``host=X`` as an option of the ``host`` group; a folder is rewritten to
    ``host=local host.path=X``. Several comma-separated folders in a multirun are left to the user.
    """
    argv = sys.argv if argv is None else argv
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("host", "donor") and "," not in value and Path(value).is_dir():
            out += [f"{key}=local", f"{key}.path={Path(value).resolve()}"]
        else:
            out.append(arg)
    argv[:] = out
    return out


def rewrite_model_override(argv: list[str] | None = None) -> list[str]:
    """``evaluate.py model=<folder>``: passed on as ``model_dir`` (the key that holds it in conf/evaluate.yaml)."""
    argv = sys.argv if argv is None else argv
    argv[:] = [f"model_dir={a.split('=', 1)[1]}" if a.startswith("model=") else a for a in argv]
    return argv
