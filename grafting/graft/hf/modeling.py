"""Grafted models as Hugging Face models: ``save_pretrained``, then ``AutoModelForCausalLM.from_pretrained``.

:class:`~grafting.graft.hf.config.GraftedConfig` (model_type ``grafted``) holds the host's config, the
donor's config and the graft spec (donor block ``layer``, host position ``dest``, translator kind;
the widths are the two configs' ``hidden_size``). :class:`GraftedForCausalLM` rebuilds the host from
its config, puts a :class:`~grafting.graft.grafted.GraftedBlock` (Pre-T, donor block ``layer``, Post-T,
donor rotary) at ``dest``, and delegates ``forward`` and ``generate`` to that grafted host
(``.host``), so the KV cache and generation behave exactly as the host's own.

The model is registered with ``AutoModelForCausalLM`` when this module is imported (the config
with ``AutoConfig`` by :mod:`grafting.graft.hf.config`); ``import grafting.graft.hf`` imports both.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.configuration_utils import PretrainedConfig
from transformers.generation.utils import GenerationMixin
from transformers.modeling_utils import PreTrainedModel
from transformers.models.auto.modeling_auto import AutoModelForCausalLM

from grafting import surgery
from grafting.graft.block import GraftedBlock, SkippedBlock, graft_of, span_of
from grafting.graft.hf.config import GraftedConfig
from grafting.graft.translators import TRANSLATORS, build_translator


def _keep_weights_(module: nn.Module) -> None:
    """Mark ``module`` as initialised so ``post_init`` leaves its weights alone."""
    for m in module.modules():
        m._is_hf_initialized = True


def _build_graft(config: GraftedConfig, host: PreTrainedModel) -> GraftedBlock:
    """A graft shaped like the saved one: fresh weights, or meta ones under ``from_pretrained``."""
    # A meta skeleton of the donor gives its block and rotary classes (and a config with attention set up).
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config.donor_config())
    donor_config = skeleton.config
    blocks = []
    for k in range(int(config.span)):
        block = type(surgery.get_blocks(skeleton)[config.layer + k])(donor_config, config.layer + k)
        surgery.set_attention_layer_idx_(block, config.dest + k)  # it takes host block dest+k's KV-cache slot
        blocks.append(block)
    rotary = surgery.rotary_embedding(skeleton)
    d_host, d_donor = surgery.hidden_size(host), int(donor_config.hidden_size)
    pre = build_translator(config.translator, d_host, d_donor)
    post = build_translator(config.translator, d_donor, d_host)
    if next(pre.parameters()).device.type != "meta":  # built for use, not for loading: keep the identity
        _keep_weights_(pre)
        _keep_weights_(post)
    return GraftedBlock(
        blocks[0], pre, post, type(rotary)(config=donor_config) if rotary is not None else None,
        donor_config=donor_config, layer=config.layer, following=blocks[1:],
        host_family=surgery.architecture(host).family,
    )


def _save_pretrained_grafted(self: PreTrainedModel, save_directory: str | Path, *args: Any, **kwargs: Any):
    """``save_pretrained`` of a grafted host: writes the ``GraftedForCausalLM`` format (reloads whole)."""
    to_hf_grafted(self).save_pretrained(save_directory, *args, **kwargs)


def save_as_hf_grafted_(grafted: PreTrainedModel) -> None:
    """Make ``grafted.save_pretrained`` save the loadable grafted format instead of a plain host.

    A plain host folder would reload with the grafted block randomly initialised (only a warning).
    """
    # A partial (not a bound method) so that deepcopy and pickle keep the override on the copy.
    grafted.save_pretrained = functools.partial(_save_pretrained_grafted, grafted)


class GraftedForCausalLM(PreTrainedModel, GenerationMixin):
    """A host causal LM with one block replaced by a graft; loads with ``AutoModelForCausalLM``.

    ``host`` is the grafted host model (the host's own transformers class holding the
    ``GraftedBlock``); every grafting utility (``graft_of``, ``surgery``) works on it.
    """

    config_class = GraftedConfig
    base_model_prefix = "host"
    main_input_name = "input_ids"

    def __init__(self, config: GraftedConfig, host: PreTrainedModel | None = None):
        super().__init__(config)
        if host is None:
            # The default dtype is what from_pretrained(dtype=...) asked for; the host config's would win.
            host = AutoModelForCausalLM.from_config(config.host_config(), dtype=torch.get_default_dtype())
            surgery.swap_block_(host, config.dest, _build_graft(config, host))
            for k in range(1, int(config.span)):
                surgery.swap_block_(host, config.dest + k, SkippedBlock())
            save_as_hf_grafted_(host)
        else:
            _keep_weights_(host)  # an existing grafted model: use its weights as they are
        self.host = host
        self.generation_config = host.generation_config
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.host.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.host.get_output_embeddings()

    def forward(self, *args: Any, **kwargs: Any):
        return self.host(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        """The host's ``generate`` (its KV cache, its input preparation), this model's generation config."""
        self.host.generation_config = self.generation_config
        return self.host.generate(*args, **kwargs)


def to_hf_grafted(
    grafted: PreTrainedModel, donor_config: PretrainedConfig | None = None, layer: int | None = None
) -> GraftedForCausalLM:
    """A grafted host model (from :func:`~grafting.graft.grafted.build_grafted`) as a :class:`GraftedForCausalLM`.

    The wrapper shares ``grafted``'s modules (no copy). ``donor_config`` and ``layer`` default to what
    ``build_grafted`` recorded in the graft.
    """
    dest, graft = graft_of(grafted)
    donor_config = donor_config if donor_config is not None else graft.donor_config
    layer = layer if layer is not None else graft.layer
    if donor_config is None or layer is None:
        raise ValueError(
            "this graft does not record its donor config and donor block index: "
            "pass to_hf_grafted(model, donor_config=donor.config, layer=graft.layer)."
        )
    kinds = [k for k, cls in TRANSLATORS.items() if type(graft.pre_translator) is cls]
    if not kinds:
        kind = type(graft.pre_translator).__name__
        raise ValueError(f"unknown translator type {kind}; known: {sorted(TRANSLATORS)}.")
    config = GraftedConfig(host=grafted.config.to_dict(), donor=donor_config.to_dict(),
                           layer=int(layer), dest=dest, translator=kinds[0], span=span_of(graft))
    return GraftedForCausalLM(config, host=grafted)


__all__ = ["GraftedConfig", "GraftedForCausalLM", "save_as_hf_grafted_", "to_hf_grafted"]

AutoModelForCausalLM.register(GraftedConfig, GraftedForCausalLM, exist_ok=True)
