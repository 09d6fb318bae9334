"""Register grafted models with transformers' Auto classes without importing torch at ``import grafting``.

:func:`install` imports :mod:`grafting.hf_config` (registers ``GraftedConfig`` with ``AutoConfig``)
and :mod:`grafting.hf_grafted` (registers ``GraftedForCausalLM`` with ``AutoModelForCausalLM``)
right away if transformers has loaded the matching Auto module, and otherwise the moment it does:
a ``sys.meta_path`` hook runs them after that module executes. So ``import grafting`` stays cheap,
and ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained`` know ``grafted`` whatever the import order.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# transformers module -> our module that registers with it on import
HOOKS = {
    "transformers.models.auto.configuration_auto": "grafting.hf_config",
    "transformers.models.auto.modeling_auto": "grafting.hf_grafted",
}


class _RegisterAfterImport:
    """Imports ``HOOKS[name]`` right after transformers' module ``name`` runs; leaves when all have run."""

    def __init__(self, pending: dict[str, str]):
        self.pending = pending

    def find_spec(self, name, path, target=None):
        ours = self.pending.pop(name, None)
        if ours is None:
            return None
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the normal spec (``name`` is no longer pending here)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            importlib.import_module(ours)

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    pending = {}
    for name, ours in HOOKS.items():
        if name in sys.modules:
            importlib.import_module(ours)
        else:
            pending[name] = ours
    if pending and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport(pending))
