"""The layer-grafting nodes: ``graft``, ``task``, ``corpus``, ``dataloader``, ``loss``, ``finetune``, ``align``,
``evaluation``; and the typed recipes the API takes (:class:`FinetuneConfig`, :class:`AlignConfig`,
:class:`DistillConfig`, :class:`EvalSettings`, :class:`LanguageSettings`).

The recipes' defaults are the ones of conf/train.yaml (tests/test_validation.py holds them equal): a stage
reads its recipe from the config through these models (:meth:`AlignConfig.of_config`), so a key left out of
a config gets the same value from the command line and from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from grafting import names
from grafting.data.modular import KINDS as TASK_KINDS
from grafting.data.modular import task_from_config
from grafting.schema.base import LR, Count, Decay, Drop, Node, Pos, Prob, Recipe, Seed, Text

PositiveFloat = Annotated[float, Field(gt=0)]


class Graft(Node):
    """layer/ (``@package graft``): which donor block goes into which host block, and how."""

    layer: Count = None
    dest: Count = None
    span: Pos = None
    strategy: Literal[names.STRATEGIES] = None
    translator: Literal[names.TRANSLATORS] = None
    tuned_block: Text | None = None


class Task(Node):
    """``task``: the fine-tuning task (grafting.data.modular); its own rules are ``ModularAddition``'s."""

    KEY = "task"
    kind: Literal[TASK_KINDS] = None
    n: Annotated[int, Field(ge=2)] = None
    operand_max: Annotated[int, Field(ge=2)] = None
    test_size: Pos = None
    val_size: Pos | None = None
    split_seed: Seed = None
    table_seed: Count | None = None
    prompt_template: Text = None
    answer_template: Text = None

    @model_validator(mode="after")
    def _task(self) -> Task:
        if None not in (self.n, self.operand_max, self.test_size):  # test_size < operand_max**2, templates
            task_from_config(self.model_dump(exclude_unset=True))
        return self


class Corpus(Node):
    """``corpus`` (and ``dataloader.text``, a copy of it): general text (grafting.data.corpus)."""

    source: Literal[names.CORPUS_SOURCES] = None
    hub_id: Text = None
    hub_name: Text | None = None
    max_documents: Pos = None
    files: str | Annotated[list[str], Field(min_length=1)] | None = None
    format: Literal[names.CORPUS_FORMATS] | None = None
    text_column: Text = None


class Dataloader(Node):
    """dataloader/: what the translators are aligned on."""

    kind: Literal[names.LOADER_KINDS] = None
    batch_size: Pos = None
    seq_len: Pos = None
    mix_ratio: Prob = None
    max_chunks: Pos | None = None
    num_workers: Count = None
    text: Corpus = None


class Loss(Node):
    """loss/: the alignment loss."""

    KEY = "loss"
    kind: Literal[names.LOSS_KINDS] = "residual"
    distance: Literal[names.DISTANCES] = "kl"
    reading: Literal[names.READINGS] = "logit_lens"  # residual losses only: how a stream is read
    temperature: PositiveFloat = 1.0


class FinetuneConfig(Recipe):
    """The fine-tuning recipe of a donor block (``finetune``, less its ``cache`` switch)."""

    KEY = "finetune"
    method: Literal[names.FINETUNE_METHODS] = "lora"
    steps: Pos = 300
    lr: LR = 1e-3
    batch_size: Pos = 32
    lora_r: Pos = 8
    lora_alpha: Pos = 16
    lora_dropout: Drop = 0.0
    weight_decay: Decay = 0.0

    @classmethod
    def of_config(cls, finetune: Mapping[str, Any]) -> FinetuneConfig:
        """The recipe of a ``finetune`` node (plain data)."""
        node = FinetuneNode.of(finetune)
        return cls(**node.model_dump(exclude={"cache"}))


class FinetuneNode(FinetuneConfig):
    """``finetune``: the recipe, and whether a tuned block may come from the shared cache."""

    cache: bool = False


class DistillConfig(Recipe):
    """``align.distill``: ``align.method=distill``'s task-logit phase."""

    KEY = "align.distill"
    steps: Pos = 100
    lr: LR = 1e-3
    weight_decay: Decay = 0.0
    task_weight: Decay = 1.0
    text_weight: Decay = 1.0
    eval_batches: Pos = 4


class AlignSteps(Recipe):
    """The settings of the paper's two phases (Pre-T, then Post-T) shared by ``align`` and :class:`AlignConfig`."""

    KEY = "align"
    steps: Pos = 200  # per phase
    lr: LR = 3e-3
    weight_decay: Decay = 0.0
    val_check_interval: Pos = 100
    limit_val_batches: Count = 4
    solver: Literal[names.SOLVERS] = "adam"  # adam: gradient steps | lstsq, procrustes: a closed form, no steps
    init: Literal[names.INITS] = "identity"  # adam only: start from the identity or from that closed form
    lstsq_batches: Pos = 16


class Align(AlignSteps):
    """``align``: the two phases, the method run after them (checked against
    grafting.stages.align_methods by the root), its distill phase, and the cache switch."""

    method: Text = "paper"
    cache: bool = False
    distill: DistillConfig = DistillConfig()


_LOSS = Loss()


class AlignConfig(AlignSteps):
    """The alignment recipe: the ``align`` node's phases and the ``loss`` node (``loss`` is ``loss.kind``)."""

    KEYS = {"loss": "loss.kind", "distance": "loss.distance", "reading": "loss.reading",
            "temperature": "loss.temperature"}
    loss: Literal[names.LOSS_KINDS] = _LOSS.kind
    distance: Literal[names.DISTANCES] = _LOSS.distance
    reading: Literal[names.READINGS] = _LOSS.reading
    temperature: PositiveFloat = _LOSS.temperature

    @classmethod
    def of_config(cls, align: Mapping[str, Any], loss: Mapping[str, Any]) -> AlignConfig:
        """The recipe of an ``align`` and a ``loss`` node (plain data)."""
        steps, kind = Align.of(align), Loss.of(loss)
        return cls(**steps.model_dump(include=set(AlignSteps.model_fields)), loss=kind.kind,
                   distance=kind.distance, reading=kind.reading, temperature=kind.temperature)


class LanguageSettings(Recipe):
    """How language preservation is measured (``evaluation.language``)."""

    KEY = "evaluation.language"
    n_texts: Pos = 100  # held-out texts whose truncation each model continues
    prompt_tokens: Pos = 32
    max_new_tokens: Pos = 32
    batch_size: Pos = 32
    mlm_model: Text | None = "builtin"  # the shipped tiny BERT; a hub id, a folder, or None (no MLM)
    mlm_top_k: Pos = 10
    kl_texts: Pos = 64  # held-out chunks the next-token KL to the host is measured on
    kl_seq_len: Pos = 64


class EvalSettings(Recipe):
    """How models are scored (``evaluation``, less its switches for the stages)."""

    KEY = "evaluation"
    task_points: Pos = 1000  # test problems, never trained on
    validation_points: Count = 0  # also score this many validation problems (val_f_H, ...): where choices are made
    batch_size: Pos = 128
    max_new_tokens: Pos = 8
    first_line_only: bool = True  # f_H / f_S / fact on the answer line
    n_samples: Count = 8  # raw outputs kept per model
    device: Text = "auto"
    language: LanguageSettings = LanguageSettings()

    @classmethod
    def of_config(cls, evaluation: Mapping[str, Any]) -> EvalSettings:
        """The settings of an ``evaluation`` node (plain data)."""
        node = Evaluation.of(evaluation)
        return cls(**node.model_dump(include=set(cls.model_fields)))


class Evaluation(EvalSettings):
    """``evaluation``: the settings, and the pipeline's switches."""

    controls: bool = True  # also score the graft with the vanilla block and with identity translators
    host_lora: bool = False  # also score the host with LoRA on block graft.dest (as many parameters)
    cache: bool = False  # read back the scores of a model already evaluated (<cache>/scores)
    score_whole_output: bool = None  # no longer read (every score is kept per line and whole); still accepted
