"""Grafted models as Hugging Face models. Importing this package registers them with transformers' Auto classes:

    import grafting.graft.hf  # noqa: F401  (then AutoModelForCausalLM.from_pretrained(folder) loads a graft)

:mod:`~grafting.graft.hf.config` holds ``GraftedConfig`` (model_type ``grafted``), :mod:`~grafting.graft.hf.modeling`
``GraftedForCausalLM`` and :func:`~grafting.graft.hf.modeling.to_hf_grafted`. ``grafting.api`` imports it.
"""

from grafting.graft.hf.config import GraftedConfig
from grafting.graft.hf.modeling import GraftedForCausalLM, to_hf_grafted

__all__ = ["GraftedConfig", "GraftedForCausalLM", "to_hf_grafted"]
