"""Pretraining the tiny models from scratch: the causal-LM pair and the offline MLM scorer.

Loading them is :mod:`grafting.models`; this package trains what is missing and sits beside
:mod:`grafting.modules` (it drives their LightningModules).
"""

from grafting.pretraining.causal_lm import ensure_pretrained, pretrain

__all__ = ["ensure_pretrained", "pretrain"]
