"""Training-free transplantation: activation analysis, module selection, in-place transplant, TIR/Recovery."""

from grafting.transplant.analysis import (
    SCORERS,
    ActivationRecorder,
    rank_modules,
    record_activations,
    register_scorer,
    score_modules,
)
from grafting.transplant.candidates import candidate_modules, check_compatible, linear_modules
from grafting.transplant.metrics import MetricResult, general_text_kl, recovery, tir
from grafting.transplant.paired import paired_l1
from grafting.transplant.selection import SELECTORS, register_selector, select
from grafting.transplant.transplant import restore_, transplant_, transplanted

__all__ = [
    "SCORERS",
    "SELECTORS",
    "ActivationRecorder",
    "MetricResult",
    "candidate_modules",
    "check_compatible",
    "general_text_kl",
    "linear_modules",
    "paired_l1",
    "rank_modules",
    "record_activations",
    "recovery",
    "register_scorer",
    "register_selector",
    "restore_",
    "score_modules",
    "select",
    "tir",
    "transplant_",
    "transplanted",
]
