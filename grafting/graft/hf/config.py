"""``GraftedConfig``, the config of a saved grafted model (model_type ``grafted``); needs no torch.

Registered with ``AutoConfig`` on import (``import grafting.graft.hf`` does both registrations); the model is in
:mod:`grafting.graft.hf.modeling`.
"""

from __future__ import annotations

from transformers.configuration_utils import PretrainedConfig
from transformers.models.auto.configuration_auto import AutoConfig


class GraftedConfig(PretrainedConfig):
    """Host config and donor config (both as dicts) and the graft spec; widths are their ``hidden_size``."""

    model_type = "grafted"

    host: dict | None = None
    donor: dict | None = None
    layer: int = 0  # donor block (graft.layer)
    dest: int = 0  # host position it replaces (graft.dest)
    translator: str = "linear"
    span: int = 1  # donor blocks layer..layer+span-1 over host blocks dest..dest+span-1 (graft.span)

    def host_config(self) -> PretrainedConfig:
        return AutoConfig.for_model(**self.host)

    def donor_config(self) -> PretrainedConfig:
        return AutoConfig.for_model(**self.donor)


AutoConfig.register(GraftedConfig.model_type, GraftedConfig, exist_ok=True)
