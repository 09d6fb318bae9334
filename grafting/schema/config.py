"""The root of the schema (:class:`Config`: one field per top-level node) and :func:`validate_config`.

``hydra`` is Hydra's to check and is skipped. The ``trainer`` node, a logger's node and a model's ``arch``
also take keys they do not list (keyword arguments of Lightning and transformers classes, checked by
those); every other node refuses a key it does not list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import AfterValidator, Field, ValidationError, model_validator

from grafting.errors import ConfigError
from grafting.schema.base import Kwargs, Node, Pos, Seed, Text, config_error
from grafting.schema.graft import Align, Corpus, Dataloader, Evaluation, FinetuneNode, Graft, Loss, Task
from grafting.schema.models import ACCELERATORS, Arch, ModelSpec, Pretrain, Tiny
from grafting.schema.skillpack import Continual, Skill, Skillpack
from grafting.schema.transplant import Transplant
from grafting.stages.align_methods import names as align_method_names
from grafting.stages.registry import STAGES

#: lightning's precision names (its _PRECISION_INPUT; tests/test_validation.py checks them against it).
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "transformer-engine", "transformer-engine-float16", "16-true",
              "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true")
STAGE_NAMES = tuple(STAGES)
#: Stages that graft donor block graft.layer into host block graft.dest.
GRAFT_STAGES = ("pipeline", "finetune", "align")
SKIPPED = ("hydra",)


def _devices(value: Any) -> Any:
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, int):
        ok = value >= 1 or value == -1
    elif isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        ok = value in ("auto", "-1") or bool(parts) and all(p.strip().isdigit() for p in parts)
    else:
        ok = isinstance(value, list) and bool(value) and all(type(v) is int and v >= 0 for v in value)
    if not ok:
        raise ValueError("must be an int >= 1, -1, 'auto', a list of device indices or a string like '0,1'")
    return value


class Trainer(Kwargs):
    """trainer/: keyword arguments of lightning.Trainer (those listed are checked here)."""

    target: Text = Field(None, alias="_target_")
    accelerator: Literal[ACCELERATORS] = None
    devices: Annotated[Any, AfterValidator(_devices)] = None
    num_nodes: Pos = None
    strategy: Text = None
    precision: Literal[PRECISIONS] = None
    log_every_n_steps: Pos = None
    enable_progress_bar: bool = None
    enable_model_summary: bool = None
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] = None
    gradient_clip_val: Annotated[float, Field(ge=0)] | None = None
    deterministic: bool | Literal["warn"] = None
    use_distributed_sampler: bool = None


class Logger(Kwargs):
    """logger/: one experiment logger, keyword arguments of its ``_target_`` class."""

    target: Text = Field(None, alias="_target_")
    save_dir: Text = None
    name: Text | None = None
    version: Text | None = None
    project: Text = None
    group: Text | None = None
    job_type: Text | None = None
    log_model: bool | Literal["all"] = None


class Paths(Node):
    """paths/: folders, most resolved by Hydra at run time."""

    root_dir: Text = None
    log_dir: Text = None
    output_dir: Text = None
    cache_dir: Text = None


class MLMPretrain(Pretrain):
    mask_prob: Annotated[float, Field(gt=0, lt=1)] = None


class MLMRecipe(Node):
    """stage/pretrain_mlm.yaml's ``recipe``: the offline MLM scorer (a tiny BERT)."""

    seed: Seed = None
    vocab_size: Pos = None
    arch: Arch = None
    pretrain: MLMPretrain = None


class Stage(Node):
    """stage/: which stage runs (grafting.stages.registry), and that stage's own keys."""

    name: Literal[STAGE_NAMES] = None
    ship: bool = None  # pretrain, pretrain_mlm
    run_dir: Annotated[list[Text], Field(min_length=1)] | None = None  # diagnose: pipeline run folders
    n_prompts: Pos = None  # diagnose
    recipe: MLMRecipe = None  # pretrain_mlm


class Config(Node):
    """A whole composed config (conf/train.yaml or conf/evaluate.yaml with its groups)."""

    seed: Seed | None = None
    run_name: Text = None
    overwrite: bool = None
    resume: bool = None
    checkpoint_every: Pos = None
    # evaluate.yaml
    run_dir: Text | None = None
    model_dir: Text | None = None
    aggregate: Text | None = None
    aggregate_model: Text | None = None
    aggregate_out: Text | None = None
    allow_mixed: bool = None
    # the nodes
    paths: Paths = None
    stage: Stage = None
    tiny: Tiny = None
    host: ModelSpec = None
    donor: ModelSpec = None
    graft: Graft = None
    task: Task = None
    corpus: Corpus = None
    dataloader: Dataloader = None
    loss: Loss = Loss()
    finetune: FinetuneNode = FinetuneNode()
    align: Align = Align()
    evaluation: Evaluation = None
    trainer: Trainer = None
    logger: dict[str, Logger] | None = None
    skill: Skill = None
    skillpack: Skillpack = None
    continual: Continual = None
    transplant: Transplant = None

    @model_validator(mode="after")
    def _across_nodes(self) -> Config:
        methods = align_method_names()
        if self.align.method not in methods:
            raise ConfigError("align.method", f"must be one of {', '.join(methods)}; got {self.align.method!r}.")
        if self.continual is not None and self.continual.tasks:
            defined = sorted(self.skill.tasks or {}) if self.skill is not None else []
            bad = [t for t in self.continual.tasks if t not in defined]
            if bad:
                raise ConfigError("continual.tasks", f"{bad[0]!r} is not a task defined in skill.tasks "
                                                     f"({', '.join(defined)}).")
        if self.graft is not None and self.stage is not None and self.stage.name in GRAFT_STAGES:
            for key, role, model in (("layer", "donor", self.donor), ("dest", "host", self.host)):
                blocks = model.arch.blocks if model is not None and model.arch is not None else None
                value = getattr(self.graft, key)
                if blocks is not None and value is not None and value >= blocks:
                    raise ConfigError(f"graft.{key}", f"{value} is not a block of {role} ({model.name or role} "
                                                      f"has {blocks} blocks: 0..{blocks - 1}).")
        return self


def validate_config(cfg: DictConfig) -> Config:
    """The config as a :class:`Config`, or :class:`ConfigError` naming the first invalid key; run before any
    model is loaded or trained.

    A value reached by interpolation is reported at the key it was written to (``task.operand_max``, not
    ``skill.tasks.modadd.operand_max``), and keys holding a value before keys that compute one. A value only
    Hydra's runtime resolves (``${hydra:...}``) is checked as the text it is; ``???`` is left to its consumer.
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    interpolated: set[str] = set()
    data = _resolved(cfg, raw, "", interpolated)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise config_error(err, data, origin=lambda key: origin(raw, key),
                           first=lambda key: key not in interpolated, model=Config) from None


def _has_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    return isinstance(value, list) and any(_has_interpolation(v) for v in value)


def _resolved(cfg: DictConfig, raw: Mapping[str, Any], prefix: str, interpolated: set[str]) -> dict[str, Any]:
    """``raw`` with each interpolation resolved by its full key (a resolver's error leaves the text)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if not prefix and key in SKIPPED or value == "???":
            continue
        if _has_interpolation(value):
            interpolated.add(key)
            try:
                value = OmegaConf.select(cfg, key, throw_on_missing=True)
                if isinstance(value, DictConfig):
                    value = OmegaConf.to_container(value, resolve=False)
                elif isinstance(value, ListConfig):
                    value = OmegaConf.to_container(value, resolve=True)
            except Exception:  # noqa: BLE001 (any resolver's error: e.g. ${hydra:...} outside a run)
                out[name] = raw[name]
                continue
        out[name] = _resolved(cfg, value, key + ".", interpolated) if isinstance(value, dict) else value
    return out


_REF = re.compile(r"\$\{(\.*)([\w\-]+(?:\.[\w\-]+)*)\}")


def origin(raw: Mapping[str, Any], key: str, hops: int = 0) -> str:
    """The key whose value ``key`` holds: through ``${a.b}`` (also ``${.b}``) on it or on a node above it."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            return key
        node = node[part]
        match = _REF.fullmatch(node) if isinstance(node, str) else None
        if match and hops < 16:
            dots, target = match.groups()
            base = parts[: i + 1 - len(dots)] if dots else []
            return origin(raw, ".".join([*base, target, *parts[i + 1:]]), hops + 1)
    return key
