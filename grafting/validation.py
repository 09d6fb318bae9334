"""Every config key checked before any compute: one table from dotted key to rule, errors name the key.

:data:`RULES` maps a dotted key (``*`` matches one level, e.g. ``skill.tasks.*.n``) to a rule:
``Int(min=1)``, ``Float(gt=0)``, ``Prob()``, ``Bool()``, ``Choice(...)``, ``Str()`` (free text, paths,
templates), ``ListOf(rule)``, ``Key(node)`` (a name defined under another node), ``Keys(names)`` (a
mapping whose keys are among ``names``) or ``Check(predicate, description)``. A new config key is one
line in the table; ``tests/test_validation_property.py`` fails for any key of a composed config that
has no rule. Keys absent from a config are not checked, so rules for optional keys cost nothing.

This module imports no torch or lightning (``python train.py <bad key>`` fails in about a second), so
the allowed values of registries are spelled out here; ``tests/test_validation.py`` checks that they
equal the registries (``grafting.losses.KINDS``, ``grafting.skillpack.COMPRESSORS``, ...).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from grafting.data.modular import task_from_config
from grafting.errors import ConfigError
from grafting.stages.align_methods import names as align_method_names
from grafting.stages.registry import STAGES

log = logging.getLogger(__name__)

# Registries, spelled out to keep this module light (tests/test_validation.py keeps them in sync).
STRATEGIES = ("original", "direct")
TRANSLATORS = ("linear", "affine")  # grafting.translators.TRANSLATORS
LOSS_KINDS = ("residual", "logits")  # grafting.losses.KINDS
DISTANCES = ("mse", "cosine", "kl")  # grafting.losses.DISTANCES
READINGS = ("logit_lens", "hidden")  # grafting.losses.READINGS
LOADER_KINDS = ("mod", "text", "mixed")  # grafting.data.datamodule.KINDS
CORPUS_SOURCES = ("builtin", "local", "fineweb")
CORPUS_FORMATS = ("text", "json", "parquet", "csv", "arrow")  # datasets' packaged builders
FINETUNE_METHODS = ("lora", "full")  # grafting.modules.layer_finetune.METHODS
MODEL_SOURCES = ("hub", "local", "random", "tiny_pretrained", "gguf_package")  # grafting.models.loading.SOURCES
MODEL_DTYPES = ("float32", "bfloat16", "float16")  # grafting.models.loading._DTYPES
DATA_PARTS = ("all", "dedup", "a", "b")  # grafting.models.pretrained_tiny.DATA_PARTS
TASK_KINDS = ("modadd", "unary", "lookup", "recall")  # grafting.data.modular.KINDS
SKILL_KINDS = ("modadd", "reverse")  # grafting.data.skill_tasks.TASK_KINDS
WORD_MODES = ("reverse", "copy", "sort")  # grafting.data.words.MODES
COMPRESSORS = ("dense", "none", "keep", "magnitude", "bitdelta", "dare", "svd_rank", "svd_energy", "svd_quant",
               "lora")  # grafting.skillpack.COMPRESSORS
POLICY_KEYS = ("embedding", "lm_head", "attention", "mlp", "norm", "other", "vector")  # skillpack.policy
MERGERS = ("task_arithmetic", "ties", "dare")  # grafting.skillpack.merging.MERGERS
BUDGET_METHODS = ("dense", "svd", "svd_quant", "graftllm", "graftllm_gptq", "magnitude", "dare",
                  "bitdelta")  # grafting.skillpack.budget.FAMILIES
PACK_DTYPES = ("float16", "bfloat16", "float32")  # grafting.skillpack.quant._DTYPES
QUANT_BITS = (2, 3, 4, 8, 16)  # grafting.skillpack.quant.SUPPORTED_BITS + FP16_BITS
SCORERS = ("abs_diff", "rel_diff")  # grafting.transplant.analysis.SCORERS
PAIRED_SCORERS = ("l1",)  # grafting.transplant.paired (stages.transplant.ALL_SCORERS)
TRANSPLANT_PAIRS = ("generation", "instruct")  # grafting.stages.transplant.PAIRS
TASK_METRICS = ("f_H", "f_S", "fact")  # grafting.transplant.report.TASK_KEYS
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "transformer-engine", "transformer-engine-float16", "16-true",
              "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true")  # lightning's _PRECISION_INPUT
MIN_VOCAB = 258  # the byte-level BPE always holds 256 bytes + EOS + PAD


@dataclass(frozen=True)
class Rule:
    """Base rule. ``nullable``: null is allowed; ``node``: a mapping is allowed too (its keys have rules)."""

    nullable: bool = field(default=False, kw_only=True)
    node: bool = field(default=False, kw_only=True)

    def ok(self, value: Any, cfg: DictConfig) -> bool:
        raise NotImplementedError

    def describe(self, cfg: DictConfig) -> str:
        raise NotImplementedError

    def check(self, key: str, value: Any, cfg: DictConfig) -> None:
        if value is None and self.nullable:
            return
        if self.node and isinstance(value, Mapping):
            return self.check_node(key, value, cfg)
        if value is None or not self.ok(value, cfg):
            expected = self.describe(cfg) + (" or null" if self.nullable else "")
            raise ConfigError(key, f"must be {expected}; got {_show(value)}.")

    def check_node(self, key: str, value: Mapping, cfg: DictConfig) -> None:
        """A mapping where ``node`` allows one: its leaves have their own rules."""


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return "null" if value is None else repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Int(Rule):
    min: int | None = None
    max: int | None = None

    def ok(self, value, cfg):
        return (_is_int(value) and (self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))

    def describe(self, cfg):
        if self.min is not None and self.max is not None:
            return f"an int in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"an int >= {self.min}"
        return "an int" if self.max is None else f"an int <= {self.max}"


@dataclass(frozen=True)
class Float(Rule):
    """A finite number (ints allowed) with optional bounds: ``gt``/``ge`` below, ``lt``/``le`` above."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def ok(self, value, cfg):
        return (_is_number(value) and (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def describe(self, cfg):
        bounds = [f"{op} {v}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if v is not None]
        return " and ".join(["a number " + bounds[0], *bounds[1:]]) if bounds else "a number"


def Prob(**kwargs) -> Float:  # noqa: N802 (reads like the other rules)
    """A number in [0, 1]."""
    return Float(ge=0, le=1, **kwargs)


@dataclass(frozen=True)
class Bool(Rule):
    def ok(self, value, cfg):
        return isinstance(value, bool)

    def describe(self, cfg):
        return "true or false"


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``options``, compared with the type (``1`` is not ``True``, ``"16"`` is not ``16``)."""

    options: tuple = ()

    def __init__(self, *options: Any, nullable: bool = False, node: bool = False):
        object.__setattr__(self, "options", tuple(options))
        object.__setattr__(self, "nullable", nullable)
        object.__setattr__(self, "node", node)

    def ok(self, value, cfg):
        return any(type(value) is type(o) and value == o for o in self.options)

    def describe(self, cfg):
        return "one of " + ", ".join(map(str, self.options))


@dataclass(frozen=True)
class Str(Rule):
    """Free text: names, paths, hub ids, templates (a number is taken as text, e.g. ``run_name=2024``)."""

    def ok(self, value, cfg):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)

    def describe(self, cfg):
        return "a string"


@dataclass(frozen=True)
class ListOf(Rule):
    item: Rule = field(default_factory=Str)
    min_len: int = 1

    def ok(self, value, cfg):
        return (isinstance(value, list) and len(value) >= self.min_len
                and all(v is None and self.item.nullable or v is not None and self.item.ok(v, cfg) for v in value))

    def describe(self, cfg):
        size = "a list" if self.min_len == 0 else "a non-empty list"
        return f"{size} whose items are each {self.item.describe(cfg)}"


@dataclass(frozen=True)
class OneOrList(Rule):
    """One value, or a non-empty list of candidates (a grid the stage searches on validation)."""

    item: Rule = field(default_factory=Str)

    def ok(self, value, cfg):
        return ListOf(self.item).ok(value, cfg) if isinstance(value, list) else self.item.ok(value, cfg)

    def describe(self, cfg):
        return f"{self.item.describe(cfg)}, or a non-empty list of such"


@dataclass(frozen=True)
class Key(Rule):
    """A name defined under the mapping at ``node_key`` (e.g. ``skill.task`` names one of ``skill.tasks``)."""

    node_key: str = ""

    def _names(self, cfg) -> list[str]:
        node = OmegaConf.select(cfg, self.node_key)
        return [str(k) for k in node] if isinstance(node, DictConfig) else []

    def ok(self, value, cfg):
        return isinstance(value, str) and value in self._names(cfg)

    def describe(self, cfg):
        return f"a name defined in {self.node_key} ({', '.join(self._names(cfg))})"


@dataclass(frozen=True)
class Keys(Rule):
    """A mapping whose keys are among ``names``; its values are checked by their own rules."""

    names: tuple = ()
    node: bool = field(default=True, kw_only=True)

    def ok(self, value, cfg):
        return False  # a mapping goes to check_node

    def describe(self, cfg):
        return "a mapping with keys among " + ", ".join(self.names)

    def check_node(self, key, value, cfg):
        for name in value:
            if str(name) not in self.names:
                raise ConfigError(f"{key}.{name}", f"unknown name; allowed: {', '.join(self.names)}.")


@dataclass(frozen=True)
class Check(Rule):
    """Anything else: ``predicate(value)`` must hold."""

    predicate: Callable[[Any], bool] = bool
    description: str = ""

    def ok(self, value, cfg):
        return bool(self.predicate(value))

    def describe(self, cfg):
        return self.description


def _devices(value: Any) -> bool:
    if _is_int(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        return value in ("auto", "-1") or bool(parts) and all(p.strip().isdigit() for p in parts)
    return isinstance(value, list) and bool(value) and all(_is_int(v) and v >= 0 for v in value)


def _schedule(value: Any) -> bool:
    """``[[count, bits], ...]``: count an int >= 0 (or null / "rest" / -1 = the rest), bits a supported width."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(p, list) and len(p) == 2 and (p[0] in (None, "rest", -1) or _is_int(p[0]) and p[0] >= 0)
        and Choice(*QUANT_BITS).ok(p[1], None) for p in value)


def _paths(value: Any) -> bool:
    return isinstance(value, str) or isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _under(prefixes: Iterable[str], rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """The same rules under several prefixes (a model spec under host, donor and transplant.source)."""
    return {f"{p}.{k}": r for p in prefixes for k, r in rules.items()}


POS = Int(min=1)
COUNT = Int(min=0)
SEED = Int(min=0, max=2**32 - 1)
LR = Float(gt=0)
DECAY = Float(ge=0)
DROP = Float(ge=0, lt=1)
DEVICES = Check(_devices, "an int >= 1, -1, 'auto', a list of device indices or a string like '0,1'")

# A model's architecture (transformers config kwargs); gpt_neox/llama names and gpt2 names.
ARCH: dict[str, Rule] = {
    "model_type": Str(),
    "hidden_size": POS, "num_hidden_layers": POS, "num_attention_heads": POS, "num_key_value_heads": POS,
    "intermediate_size": POS, "vocab_size": POS, "max_position_embeddings": POS,
    "n_embd": POS, "n_layer": POS, "n_head": POS, "n_positions": POS,
    "rotary_pct": Float(gt=0, le=1), "rotary_emb_base": Float(gt=0), "rope_theta": Float(gt=0),
    "use_parallel_residual": Bool(), "tie_word_embeddings": Bool(),
}
# Pretraining recipe of a tiny_pretrained model.
PRETRAIN: dict[str, Rule] = {
    "steps": POS, "lr": LR, "warmup_steps": COUNT, "weight_decay": DECAY, "batch_size": POS, "seq_len": POS,
    "val_batches": POS, "accelerator": Choice(*ACCELERATORS), "dropout": Prob(),
}
# A model spec (host, donor, transplant.source as a mapping); conf/model/*.yaml.
MODEL: dict[str, Rule] = {
    "name": Str(), "source": Choice(*MODEL_SOURCES), "shipped": Str(nullable=True), "id": Str(), "revision": Str(),
    "path": Str(), "package": Str(), "gguf_file": Str(), "install": Str(),  # gguf_package (grafting.models.gguf)
    "dtype": Choice(*MODEL_DTYPES), "trust_remote_code": Bool(), "progress_bar": Bool(),
    "seed": SEED, "init_seed": SEED, "data_seed": SEED, "data_part": Choice(*DATA_PARTS),
    "tokenizer_vocab": Int(min=MIN_VOCAB),
    **_under(["arch"], ARCH), **_under(["pretrain"], PRETRAIN),
    **_under(["shared_init.arch"], ARCH), "shared_init.init_seed": SEED,  # a wider model holding a narrow init
}
# The general-text corpus (corpus, and dataloader.text, which defaults to it).
CORPUS: dict[str, Rule] = {
    "source": Choice(*CORPUS_SOURCES), "hub_id": Str(), "hub_name": Str(nullable=True), "max_documents": POS,
    "files": Check(_paths, "a path or a non-empty list of paths", nullable=True),
    "format": Choice(*CORPUS_FORMATS, nullable=True), "text_column": Str(),
}
# A modular-addition task (task, and the modadd entries of skill.tasks).
MODADD: dict[str, Rule] = {
    "n": Int(min=2), "operand_max": Int(min=2), "test_size": POS, "split_seed": SEED,
    "prompt_template": Str(), "answer_template": Str(), "val_size": Int(min=1, nullable=True),
    "table_seed": Int(min=0, nullable=True),
}
# Params of a compressor spec (skillpack.methods.<method>.<kind>, inline or under params).
COMPRESSOR: dict[str, Rule] = {
    "alpha": Prob(), "rank": COUNT, "beta": Float(gt=0, le=1), "max_rank": Int(min=1, nullable=True),
    "schedule": Check(_schedule, f"a non-empty list of [count >= 0 or null, bits in {QUANT_BITS}] pairs"),
    "group_size": Int(min=1, nullable=True), "dtype": Choice(*PACK_DTYPES), "param_dtype": Choice(*PACK_DTYPES),
    "p": DROP, "seed": SEED, "rescale": Bool(), "randomized": Bool(), "niter": COUNT, "oversample": COUNT,
    "quantizer": Choice("rtn", "gptq"), "damp": Float(ge=0),
}

# The tiny transplant models' recipe (transplant.models; grafting.pretraining.transplant_pair.PairRecipe).
TRANSPLANT_MODELS: dict[str, Rule] = {
    **_under(["arch"], ARCH), "tokenizer_vocab": Int(min=MIN_VOCAB), "init_seed": SEED,
    "known_fraction": Prob(), "task.n_keys": POS, "task.n_values": Int(min=2), "task.split_seed": SEED,
    "task.prompt_template": Str(), "task.answer_template": Str(),
    **_under(["pretrain", "successor", "fact_sft", "instruct"], {"steps": POS, "lr": LR, "warmup_steps": COUNT,
                                                      "weight_decay": DECAY, "fact_repeats": COUNT}),
    "pretrain.batch_size": POS, "pretrain.seq_len": POS, "fact_sft.batch_size": POS, "instruct.batch_size": POS, "instruct.word_examples": COUNT,
}

RULES: dict[str, Rule] = {
    # train.yaml, top level
    "seed": Int(min=0, max=2**32 - 1, nullable=True), "run_name": Str(), "overwrite": Bool(), "resume": Bool(),
    "checkpoint_every": POS, "allow_mixed": Bool(),
    # evaluate.yaml
    "run_dir": Str(nullable=True), "model_dir": Str(nullable=True), "aggregate": Str(nullable=True),
    "aggregate_model": Str(nullable=True), "aggregate_out": Str(nullable=True),
    # paths/, hydra-resolved folders
    "paths.root_dir": Str(), "paths.log_dir": Str(), "paths.output_dir": Str(), "paths.cache_dir": Str(),
    # stage/
    "stage.name": Choice(*STAGES), "stage.ship": Bool(),
    # stage/diagnose.yaml: a list of pipeline run folders (null here; the stage itself requires them)
    "stage.run_dir": ListOf(Str(), nullable=True), "stage.n_prompts": POS,
    # stage/pretrain_mlm.yaml: the offline MLM scorer (a tiny BERT)
    "stage.recipe.seed": SEED, "stage.recipe.vocab_size": POS, **_under(["stage.recipe.arch"], ARCH),
    **_under(["stage.recipe.pretrain"], {**PRETRAIN, "mask_prob": Float(gt=0, lt=1)}),
    # tiny pretrained pair
    "tiny.pair_seed": SEED, "tiny.tokenizer_vocab": Int(min=MIN_VOCAB),
    **_under(["tiny.arch"], ARCH), **_under(["tiny.pretrain"], PRETRAIN),
    # host/, donor/ (model/)
    **_under(["host", "donor"], MODEL),
    # layer/ (@package graft)
    "graft.layer": COUNT, "graft.dest": COUNT, "graft.span": POS, "graft.strategy": Choice(*STRATEGIES),
    "graft.translator": Choice(*TRANSLATORS), "graft.tuned_block": Str(nullable=True),
    # task
    "task.kind": Choice(*TASK_KINDS), **_under(["task"], MODADD),
    # corpus, dataloader/
    **_under(["corpus", "dataloader.text"], CORPUS),
    "dataloader.kind": Choice(*LOADER_KINDS), "dataloader.batch_size": POS, "dataloader.seq_len": POS,
    "dataloader.mix_ratio": Prob(), "dataloader.max_chunks": Int(min=1, nullable=True),
    "dataloader.num_workers": COUNT,
    # loss/
    "loss.kind": Choice(*LOSS_KINDS), "loss.distance": Choice(*DISTANCES), "loss.temperature": Float(gt=0),
    "loss.reading": Choice(*READINGS),
    # finetune
    "finetune.method": Choice(*FINETUNE_METHODS), "finetune.lora_r": POS, "finetune.lora_alpha": POS,
    "finetune.lora_dropout": DROP, "finetune.lr": LR, "finetune.weight_decay": DECAY, "finetune.steps": POS,
    "finetune.batch_size": POS, "finetune.cache": Bool(),
    # align
    "align.steps": POS, "align.lr": LR, "align.weight_decay": DECAY, "align.val_check_interval": POS,
    "align.limit_val_batches": COUNT, "align.solver": Choice("adam", "lstsq", "procrustes"),
    "align.method": Choice(*align_method_names()), "align.cache": Bool(), "evaluation.host_lora": Bool(), "align.distill.steps": POS, "align.distill.lr": LR,
    "align.distill.weight_decay": DECAY, "align.distill.task_weight": DECAY,
    "align.distill.text_weight": DECAY, "align.distill.eval_batches": POS,
    "align.init": Choice("identity", "lstsq", "procrustes"), "align.lstsq_batches": POS,
    # evaluation
    "evaluation.task_points": POS, "evaluation.validation_points": COUNT, "evaluation.batch_size": POS, "evaluation.max_new_tokens": POS,
    "evaluation.first_line_only": Bool(), "evaluation.cache": Bool(), "evaluation.controls": Bool(),
    "evaluation.n_samples": COUNT, "evaluation.score_whole_output": Bool(), "evaluation.device": Str(),
    "evaluation.language.n_texts": POS, "evaluation.language.prompt_tokens": POS,
    "evaluation.language.max_new_tokens": POS, "evaluation.language.batch_size": POS,
    "evaluation.language.mlm_model": Str(nullable=True), "evaluation.language.mlm_top_k": POS,
    "evaluation.language.kl_texts": POS, "evaluation.language.kl_seq_len": POS,
    # trainer/ (lightning.Trainer kwargs)
    "trainer._target_": Str(), "trainer.accelerator": Choice(*ACCELERATORS), "trainer.devices": DEVICES,
    "trainer.num_nodes": POS, "trainer.strategy": Str(), "trainer.precision": Choice(*PRECISIONS),
    "trainer.log_every_n_steps": POS, "trainer.enable_progress_bar": Bool(), "trainer.enable_model_summary": Bool(),
    "trainer.num_sanity_val_steps": Int(min=-1), "trainer.gradient_clip_val": Float(ge=0, nullable=True),
    "trainer.deterministic": Choice(False, True, "warn"), "trainer.use_distributed_sampler": Bool(),
    # logger/
    "logger.*._target_": Str(), "logger.*.save_dir": Str(), "logger.*.name": Str(nullable=True),
    "logger.csv.version": Str(nullable=True), "logger.wandb.project": Str(), "logger.wandb.group": Str(nullable=True),
    "logger.wandb.job_type": Str(nullable=True), "logger.wandb.log_model": Choice(False, True, "all"),
    # skill/default.yaml
    "skill.task": Key(node_key="skill.tasks"), "skill.fuse": ListOf(Key(node_key="skill.tasks"), min_len=0),
    "skill.n_train": POS, "skill.n_test": POS, "skill.max_new_tokens": POS, "skill.gen_batch_size": POS,
    "skill.max_length": POS,
    "skill.source_sft.n_train": POS, "skill.source_sft.steps": POS, "skill.source_sft.lr": LR,
    "skill.source_sft.warmup_steps": COUNT, "skill.source_sft.batch_size": POS,
    "skill.target_sft.steps": POS, "skill.target_sft.lr": LR, "skill.target_sft.warmup_steps": COUNT,
    "skill.target_sft.batch_size": POS, "skill.target_sft.weight_decay": DECAY,
    "skill.dpo.enabled": Bool(), "skill.dpo.weight": Float(ge=0), "skill.dpo.beta": Float(gt=0),
    "skill.tasks.*.kind": Choice(*SKILL_KINDS), **_under(["skill.tasks.*"], MODADD),
    "skill.tasks.*.mode": Choice(*WORD_MODES), "skill.tasks.*.n_words": POS, "skill.tasks.*.vocab_size": Int(min=2),
    "skill.tasks.*.val_size": POS, "skill.n_val": POS,
    "skillpack.budget.fractions": ListOf(Float(gt=0, le=1), min_len=0),
    "skillpack.budget.methods": ListOf(Choice(*BUDGET_METHODS), min_len=0),
    "skillpack.budget.calibration_texts": POS, "skillpack.budget.calibration_batch_size": POS, "skillpack.budget.bitdelta_steps": COUNT,
    "skillpack.budget.bitdelta_lr": LR, "skillpack.lora.lrs": ListOf(LR),
    "continual.tasks": ListOf(Key(node_key="skill.tasks")),
    # skillpack/default.yaml
    "skillpack.default": Key(node_key="skillpack.methods"),
    "skillpack.methods.*": Keys(POLICY_KEYS),
    "skillpack.methods.*.*": Choice(*COMPRESSORS, node=True),
    "skillpack.methods.*.*.method": Choice(*COMPRESSORS),
    **_under(["skillpack.methods.*.*", "skillpack.methods.*.*.params"], COMPRESSOR),
    "skillpack.lora.enabled": Bool(), "skillpack.lora.dtype": Choice(*PACK_DTYPES), "skillpack.lora.lr": LR,
    "skillpack.lora.steps": Int(min=1, nullable=True), "skillpack.lora.alpha_over_r": Float(gt=0), "skillpack.lora.batched": Bool(),
    "skillpack.fusion.mergers": Keys(MERGERS),
    "skillpack.fusion.mergers.*.lam": OneOrList(Float()),
    "skillpack.fusion.mergers.*.density": OneOrList(Float(gt=0, le=1)),
    "skillpack.fusion.mergers.*.p": OneOrList(DROP), "skillpack.fusion.mergers.*.seed": SEED,
    "skillpack.fusion.mergers.*.rescale": Bool(),
    "skillpack.fusion.router.hidden": COUNT, "skillpack.fusion.router.n_train": POS,
    "skillpack.fusion.router.epochs": POS, "skillpack.fusion.router.lr": LR,
    "skillpack.table_all_skills": Bool(), "skillpack.figure": Bool(),
    # stage/transplant.yaml
    "transplant.source": Str(node=True), **_under(["transplant.source"], MODEL),
    "transplant.source_sft_steps": POS, "transplant.source_sft_lr": LR, "transplant.source_sft_weight_decay": DECAY,
    "transplant.source_sft_warmup": COUNT, "transplant.source_sft_batch_size": POS, "transplant.save_source": Bool(),
    "transplant.n_analysis_prompts": POS, "transplant.analysis_batch_size": POS, "transplant.generate_steps": COUNT,
    "transplant.scorers": ListOf(Choice(*PAIRED_SCORERS, *SCORERS)), "transplant.k_list": ListOf(POS),
    "transplant.alphas": ListOf(Prob()), "transplant.blend_alphas": ListOf(Prob(), min_len=0),
    "transplant.pair": Choice(*TRANSPLANT_PAIRS, nullable=True),
    **_under(["transplant.models"], TRANSPLANT_MODELS),
    "transplant.control_seeds": ListOf(SEED), "transplant.single_draws": COUNT, "transplant.matched_draws": COUNT, "transplant.metric": Choice(*TASK_METRICS),
    "transplant.eval_points": POS, "transplant.eval_batch_size": POS, "transplant.max_new_tokens": POS,
    "transplant.kl_texts": POS, "transplant.kl_seq_len": POS, "transplant.kl_batch_size": POS,
}
# Not checked here: hydra.* (Hydra checks its own node).
SKIPPED = ("hydra",)


@lru_cache(maxsize=4096)
def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key: an exact entry, else the wildcard entry with the fewest ``*``."""
    if key in RULES:
        return RULES[key]
    parts = key.split(".")
    matches = [p for p in RULES if "*" in p and len(p.split(".")) == len(parts)
               and all(a in ("*", b) for a, b in zip(p.split("."), parts, strict=True))]
    return RULES[min(matches, key=lambda p: p.count("*"))] if matches else None


@dataclass(frozen=True)
class Entry:
    """One checked position of a config: its key, value, rule, and whether it is reached by interpolation."""

    key: str
    value: Any
    rule: Rule | None
    interpolated: bool
    error: Exception | None = None


def entries(cfg: DictConfig) -> list[Entry]:
    """Every leaf (lists are leaves) and every mapping that has a rule, in config order; ``hydra`` skipped.

    Walks the raw container (fast) and resolves only the interpolations, by their full key.
    """
    out: list[Entry] = []
    _walk(cfg, OmegaConf.to_container(cfg, resolve=False), "", False, out)
    return out


def _has_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    return isinstance(value, list) and any(_has_interpolation(v) for v in value)


def _walk(cfg: DictConfig, raw: Mapping, prefix: str, via: bool, out: list[Entry]) -> None:
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if not prefix and key in SKIPPED or value == "???":  # missing values are the consumer's to report
            continue
        rule = rule_for(key)
        interpolated = via or _has_interpolation(value)
        if _has_interpolation(value):
            try:
                value = OmegaConf.select(cfg, key, throw_on_missing=True)
            except Exception as err:  # noqa: BLE001 (any resolver error: e.g. ${hydra:...} outside a run)
                out.append(Entry(key, None, rule, interpolated, err))
                continue
            if isinstance(value, DictConfig):
                value = OmegaConf.to_container(value, resolve=False)
            elif isinstance(value, ListConfig):
                value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, dict) and (rule is None or rule.node):
            if rule is not None:
                out.append(Entry(key, value, rule, interpolated))
            _walk(cfg, value, key + ".", interpolated, out)
        else:
            out.append(Entry(key, value, rule, interpolated))


def unchecked_keys(cfg: DictConfig) -> list[str]:
    """Keys of ``cfg`` that no rule covers (tests/test_validation_property.py wants none in conf/)."""
    return [e.key for e in entries(cfg) if e.rule is None]


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid key; run before any model is loaded or trained.

    Keys holding a value are checked before keys that copy it by interpolation, so the error names the key
    the value was written to (``task.operand_max``, not ``skill.tasks.modadd.operand_max``).
    """
    found = entries(cfg)
    for interpolated in (False, True):
        for e in found:
            if e.rule is None or e.interpolated != interpolated:
                continue
            if e.error is not None:
                if isinstance(e.rule, Str):  # a path or name only Hydra's runtime can resolve
                    continue
                raise ConfigError(e.key, f"cannot be resolved: {e.error}")
            e.rule.check(e.key, e.value, cfg)
    missing = [e.key for e in found if e.rule is None]
    if missing:
        log.warning("no validation rule for %s (add one to grafting.validation.RULES)", ", ".join(missing))
    _cross_checks(cfg)


#: Stages that graft donor block graft.layer into host block graft.dest.
GRAFT_STAGES = ("pipeline", "finetune", "align")


def _cross_checks(cfg: DictConfig) -> None:
    """Checks that relate several keys."""
    if "task" in cfg:
        task_from_config(cfg.task)  # test_size < operand_max**2 (modadd), templates
    if "graft" in cfg and OmegaConf.select(cfg, "stage.name") in GRAFT_STAGES:
        for key, model in (("graft.layer", "donor"), ("graft.dest", "host")):
            arch = OmegaConf.select(cfg, f"{model}.arch")
            layers = arch.get("num_hidden_layers", arch.get("n_layer")) if isinstance(arch, DictConfig) else None
            if layers is not None and OmegaConf.select(cfg, key) >= layers:
                raise ConfigError(key, f"{OmegaConf.select(cfg, key)} is not a block of {model} "
                                       f"({cfg[model].get('name', model)} has {layers} blocks: 0..{layers - 1}).")
