"""The ``transplant`` node (conf/stage/transplant.yaml): training-free transplantation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from grafting import names
from grafting.schema.base import LR, Count, Decay, Node, Pos, Prob, Seed, Text, Vocab
from grafting.schema.models import Arch, ModelSpec

NonEmpty = Field(min_length=1)
SCORERS = (*names.PAIRED_SCORERS, *names.SCORERS)  # grafting.stages.transplant.ALL_SCORERS


class Phase(Node):
    """One training phase of the tiny transplant models (grafting.pretraining.transplant_pair)."""

    steps: Pos = None
    lr: LR = None
    warmup_steps: Count = None
    weight_decay: Decay = None
    fact_repeats: Count = None


class PretrainPhase(Phase):
    batch_size: Pos = None
    seq_len: Pos = None


class FactSFT(Phase):
    batch_size: Pos = None


class InstructPhase(Phase):
    batch_size: Pos = None
    word_examples: Count = None


class FactTable(Node):
    """``transplant.models.task``: a table of arbitrary facts key -> digit (grafting.data.key_facts)."""

    n_keys: Pos = None
    n_values: Annotated[int, Field(ge=2)] = None
    split_seed: Seed = None
    prompt_template: Text = None
    answer_template: Text = None


class TransplantModels(Node):
    """``transplant.models``: the tiny predecessor / successor / instruct models' recipe (PairRecipe)."""

    arch: Arch = None
    tokenizer_vocab: Vocab = None
    init_seed: Seed = None
    known_fraction: Prob = None
    task: FactTable = None
    pretrain: PretrainPhase = None
    successor: Phase = None
    fact_sft: FactSFT = None
    instruct: InstructPhase = None


def _by_type(value: Any) -> str:
    return "spec" if isinstance(value, dict) else "name"


#: sft | donor | a folder of a saved model, or a model spec.
Source = Annotated[Annotated[Text, Tag("name")] | Annotated[ModelSpec, Tag("spec")], Discriminator(_by_type)]


class Transplant(Node):
    """``transplant``: the pair, the source, the activation analysis, the sweep and its controls."""

    pair: Literal[names.TRANSPLANT_PAIRS] | None = None
    models: TransplantModels = None
    source: Source = None
    source_sft_steps: Pos = None
    source_sft_lr: LR = None
    source_sft_weight_decay: Decay = None
    source_sft_warmup: Count = None
    source_sft_batch_size: Pos = None
    save_source: bool = None
    n_analysis_prompts: Pos = None
    analysis_batch_size: Pos = None
    generate_steps: Count = None
    scorers: Annotated[list[Literal[SCORERS]], NonEmpty] = None
    k_list: Annotated[list[Pos], NonEmpty] = None
    alphas: Annotated[list[Prob], NonEmpty] = None
    blend_alphas: list[Prob] = None
    control_seeds: Annotated[list[Seed], NonEmpty] = None
    single_draws: Count = None
    matched_draws: Count = None
    metric: Literal[names.TASK_METRICS] = None
    eval_points: Pos = None
    eval_batch_size: Pos = None
    max_new_tokens: Pos = None
    kl_texts: Pos = None
    kl_seq_len: Pos = None
    kl_batch_size: Pos = None
