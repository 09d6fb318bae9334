"""The SkillPack nodes: ``skill`` (conf/skill), ``skillpack`` (conf/skillpack) and ``continual``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from grafting import names
from grafting.data.skill_tasks import TASK_KINDS
from grafting.data.words import MODES
from grafting.errors import ConfigError
from grafting.schema.base import LR, Count, Decay, Drop, Node, Pos, Prob, Seed, Text

NonEmpty = Field(min_length=1)
SKILL_KINDS = tuple(TASK_KINDS)  # the registry's names (grafting.data.skill_tasks is light)


class SkillTask(Node):
    """An entry of ``skill.tasks``: a ``kind`` of grafting.data.skill_tasks.TASK_KINDS and its settings."""

    kind: Literal[SKILL_KINDS] = None
    # modadd
    n: Annotated[int, Field(ge=2)] = None
    operand_max: Annotated[int, Field(ge=2)] = None
    table_seed: Count | None = None
    # reverse (grafting.data.words)
    mode: Literal[MODES] = None
    n_words: Pos = None
    vocab_size: Annotated[int, Field(ge=2)] = None
    pool: Count | None = None  # one of grafting.data.words.N_POOLS disjoint word pools; null: WORDS
    # both
    test_size: Pos = None
    val_size: Pos | None = None
    split_seed: Seed = None
    prompt_template: Text = None
    answer_template: Text = None


class SourceSFT(Node):
    """``skill.source_sft``: full SFT of the source on true answers."""

    n_train: Pos = None
    steps: Pos = None
    lr: LR = None
    warmup_steps: Count = None
    batch_size: Pos = None


class TargetSFT(Node):
    """``skill.target_sft``: full SFT of the target on the source's answers."""

    steps: Pos = None
    lr: LR = None
    warmup_steps: Count = None
    batch_size: Pos = None
    weight_decay: Decay = None


class DPO(Node):
    enabled: bool = None
    weight: Decay = None
    beta: Annotated[float, Field(gt=0)] = None


class Skill(Node):
    """``skill``: the skills the target learns; ``task`` and ``fuse`` name entries of ``tasks``."""

    KEY = "skill"
    task: Text = None
    fuse: list[Text] = None
    n_train: Pos = None
    n_test: Pos = None
    n_val: Pos = None
    max_new_tokens: Pos = None
    gen_batch_size: Pos = None
    max_length: Pos = None
    source_sft: SourceSFT = None
    target_sft: TargetSFT = None
    dpo: DPO = None
    tasks: dict[str, SkillTask] = None

    @model_validator(mode="after")
    def _named_tasks(self) -> Skill:
        defined = sorted(self.tasks or {})
        for key, value in (("task", [self.task]), ("fuse", self.fuse)):
            bad = [v for v in value or [] if v is not None and v not in defined]
            if bad:
                raise ConfigError(f"skill.{key}", f"{bad[0]!r} is not a task defined in skill.tasks "
                                                  f"({', '.join(defined)}).")
        return self


def _schedule(value: list[Any]) -> list[Any]:
    """``[[count, bits], ...]``: count an int >= 0 (or null / "rest" / -1 = the rest), bits a supported width."""
    bits = (*names.SUPPORTED_BITS, names.FP16_BITS)
    for pair in value:
        ok = (isinstance(pair, list) and len(pair) == 2 and type(pair[1]) is int and pair[1] in bits
              and (pair[0] in (None, "rest") or type(pair[0]) is int and pair[0] >= -1))
        if not ok:
            raise ValueError(f"must be a non-empty list of [count >= 0 or null, bits in {bits}] pairs")
    return value


class CompressorParams(Node):
    """A compressor's parameters (grafting.skillpack: each class checks its own again when built)."""

    alpha: Prob = None
    rank: Count = None
    beta: Annotated[float, Field(gt=0, le=1)] = None
    max_rank: Pos | None = None
    schedule: Annotated[list[Any], NonEmpty, AfterValidator(_schedule)] = None
    group_size: Pos | None = None
    dtype: Literal[names.PACK_DTYPES] = None
    param_dtype: Literal[names.PACK_DTYPES] = None
    p: Drop = None
    seed: Seed = None
    rescale: bool = None
    randomized: bool = None
    niter: Count = None
    oversample: Count = None
    quantizer: Literal[names.QUANTIZERS] = None
    damp: Decay = None


class CompressorSpec(CompressorParams):
    """``{method: <compressor>, <params>}``, the params inline or under ``params``."""

    method: Literal[names.COMPRESSORS] = None
    params: CompressorParams = None


def _by_type(value: Any) -> str:
    return "spec" if isinstance(value, dict) else "name"


#: A compressor by name (``dense``) or as a spec (``{method: svd_rank, rank: 16}``).
Compressor = Annotated[Annotated[Literal[names.COMPRESSORS], Tag("name")] | Annotated[CompressorSpec, Tag("spec")],
                       Discriminator(_by_type)]


class LoRA(Node):
    """``skillpack.lora``: LoRA at equal size, the baseline of every table."""

    enabled: bool = None
    dtype: Literal[names.PACK_DTYPES] = None
    lr: LR = None
    lrs: Annotated[list[LR], NonEmpty] = None
    steps: Pos | None = None
    alpha_over_r: Annotated[float, Field(gt=0)] = None
    batched: bool = None


def _grid(item: Any) -> Any:
    """One value, or a non-empty list of candidates (a grid the stage searches on validation)."""
    return item | Annotated[list[item], NonEmpty]


Lam = _grid(float)
Density = _grid(Annotated[float, Field(gt=0, le=1)])
DropGrid = _grid(Drop)


class Merger(Node):
    """``skillpack.fusion.mergers.<name>``: that merger's settings, each one value or a grid."""

    lam: Lam = None
    density: Density = None
    p: DropGrid = None
    seed: Seed = None
    rescale: bool = None


class Router(Node):
    """``skillpack.fusion.router``: the routers' settings (each router reads the ones it uses)."""

    hidden: Count = None
    n_train: Pos = None
    epochs: Pos = None
    lr: LR = None
    temperature: _grid(Annotated[float, Field(gt=0)]) = None  # gate; a list: chosen on validation
    top_k: Pos = None  # gate
    rank: Pos = None  # arrow
    layer: Count = None  # tokens: the hidden state its token votes compare (0: input embeddings)
    token_temperature: Annotated[float, Field(gt=0)] = None  # tokens: softmax temperature of each token's vote
    paraphrases: bool = None  # also train on the training paraphrases


class Fusion(Node):
    mergers: dict[Literal[names.MERGERS], Merger] = None
    router: Router = None


class Budget(Node):
    """``skillpack.budget``: equal-byte-budget curves (grafting.skillpack.budget)."""

    fractions: list[Annotated[float, Field(gt=0, le=1)]] = None
    methods: list[Literal[names.BUDGET_FAMILIES]] = None
    calibration_texts: Pos = None
    calibration_batch_size: Pos = None
    bitdelta_steps: Count = None
    bitdelta_lr: LR = None


class Skillpack(Node):
    """``skillpack``: one module-aware policy per method (module kind -> compressor), LoRA, fusion, budgets."""

    default: Text = None
    methods: dict[str, dict[Literal[names.POLICY_KEYS], Compressor]] = None
    router: Literal[names.ROUTERS] | Annotated[list[Literal[names.ROUTERS]], NonEmpty] = None
    lora: LoRA = None
    fusion: Fusion = None
    budget: Budget = None
    table_all_skills: bool = None
    figure: bool = None

    @model_validator(mode="after")
    def _default_is_a_method(self) -> Skillpack:
        if self.default is not None and self.default not in (self.methods or {}):
            raise ConfigError("skillpack.default", f"{self.default!r} is not a method of skillpack.methods "
                                                   f"({', '.join(sorted(self.methods or {}))}).")
        return self


class Continual(Node):
    """``continual``: the tasks learned one after another (names of ``skill.tasks``, checked by the root)."""

    tasks: Annotated[list[Text], NonEmpty] = None
