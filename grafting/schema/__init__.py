"""One schema for every setting: a typed model per config node (pydantic), checked before any compute.

:func:`validate_config` checks a composed Hydra config against :class:`Config` (the root: one field per
node) and raises :class:`~grafting.errors.ConfigError` naming the dotted key. The API takes the same
models: :class:`FinetuneConfig`, :class:`AlignConfig`, :class:`DistillConfig`, :class:`EvalSettings` and
:class:`LanguageSettings` are the recipes of the ``finetune``, ``align`` + ``loss``, ``align.distill``,
``evaluation`` and ``evaluation.language`` nodes, with the YAML's defaults.

Allowed names come from the registries (their names, torch-free, in :mod:`grafting.names`); importing this
package imports no torch, so ``python train.py <bad value>`` fails in about a second.

- :mod:`grafting.schema.base`: the node base class, value types and the error that names a key;
- :mod:`grafting.schema.models`: ``host`` / ``donor`` model specs and architectures;
- :mod:`grafting.schema.graft`: ``graft``, ``task``, ``corpus``, ``dataloader``, ``loss``, ``finetune``,
  ``align``, ``evaluation`` and the recipes;
- :mod:`grafting.schema.skillpack`: ``skill``, ``skillpack``, ``continual``;
- :mod:`grafting.schema.transplant`: ``transplant``;
- :mod:`grafting.schema.config`: the root, ``stage``, ``trainer``, ``logger``, ``paths``; :func:`validate_config`.
"""

from grafting.schema.config import Config, validate_config
from grafting.schema.graft import AlignConfig, DistillConfig, EvalSettings, FinetuneConfig, LanguageSettings

__all__ = ["AlignConfig", "Config", "DistillConfig", "EvalSettings", "FinetuneConfig", "LanguageSettings",
           "validate_config"]
