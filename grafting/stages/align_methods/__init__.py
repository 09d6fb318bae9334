"""Alignment methods: what ``align.method=<name>`` runs once the paper's two phases are done.

One module per method, named as the option (``paper.py``, ``distill.py``). A module defines::

    def refine(ctx, grafted, controls, host, tuned_model, tokenizer) -> dict[str, dict]:
        '''Train ``grafted``'s translators further (and the same for ``controls["VanillaGraft"]``, so the
        control measures what the translators learn by themselves); return histories by phase name.'''

A new method is one new file here: ``align.method`` accepts every module of this folder (the config check
lists them without importing them) and the pipeline imports the one chosen.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def names() -> list[str]:
    """The methods there are: the modules of this folder, read without importing them."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The module of method ``name`` (``align.method`` is checked against :func:`names` before any compute)."""
    return importlib.import_module(f"{__name__}.{name}")
