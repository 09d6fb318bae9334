"""Bad input fails early with the config key named (grafting.schema); bad data rows are skipped and counted.

tests/test_validation_property.py walks every key of the schema; here: the cases the issues asked for, the
schema's own rules (interpolation, Hydra-only values, defaults, import weight) and data-level checks.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_job
from omegaconf import OmegaConf, open_dict

from grafting.data.corpus import load_text_dataset
from grafting.data.datasets import TaskSFTDataset, TextChunkDataset
from grafting.data.modular import ModExample, ModularAddition
from grafting.errors import ConfigError
from grafting.models.loading import load_model, same_tokenizer
from grafting.schema import (
    AlignConfig,
    DistillConfig,
    EvalSettings,
    FinetuneConfig,
    LanguageSettings,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override,key", [
    ("loss.distance=l1", "loss.distance"), ("loss.kind=hidden", "loss.kind"),
    ("graft.strategy=sideways", "graft.strategy"), ("graft.translator=mlp", "graft.translator"),
    ("task.n=1", "task.n"), ("dataloader.kind=video", "dataloader.kind"), ("align.steps=0", "align.steps"),
    ("++loss.reading=argmax", "loss.reading"), ("++align.solver=sgd", "align.solver"),
    ("++align.init=zeros", "align.init"), ("++align.lstsq_batches=0", "align.lstsq_batches"),
    ("++evaluation.controls=1", "evaluation.controls"), ("++evaluation.n_samples=-1", "evaluation.n_samples"),
    ("++evaluation.score_whole_output=yes", "evaluation.score_whole_output"),
    ("++task.kind=division", "task.kind"), ("tiny.pretrain.lr=0", "tiny.pretrain.lr"),
    ("tiny.pretrain.steps=0", "tiny.pretrain.steps"), ("++donor.data_part=c", "donor.data_part"),
    ("++host.init_seed=-1", "host.init_seed"), ("++donor.data_seed=1.5", "donor.data_seed"),
    ("checkpoint_every=0", "checkpoint_every"), ("seed=-1", "seed"), ("trainer.devices=0", "trainer.devices"),
    ("trainer.precision=8-bit", "trainer.precision"), ("finetune.lora_dropout=1", "finetune.lora_dropout"),
    ("evaluation.first_line_only=maybe", "evaluation.first_line_only"),
    ("evaluation.language.kl_texts=0", "evaluation.language.kl_texts"), ("graft.layer=-1", "graft.layer"),
    ("graft.layer=2", "graft.layer"), ("graft.dest=2", "graft.dest"),  # the smoke models have blocks 0..1
    ("task.operand_max=4", "task.test_size"),  # 16 test points (smoke) need more than 4 * 4 pairs
])
def test_validate_config_names_the_key(tmp_path, override, key):
    cfg = compose_config(["debug=smoke", override], tmp_path)
    with pytest.raises(ConfigError, match=rf"\[{key}\]"):
        validate_config(cfg)


@pytest.mark.parametrize("overrides,key", [
    (["stage=skillpack", "skill.task=nope"], "skill.task"),
    (["stage=skillpack", "skill.fuse=[copy,nope]"], "skill.fuse"),
    (["stage=skillpack", "skillpack.default=nope"], "skillpack.default"),
    (["stage=skillpack", "++skillpack.fusion.mergers.avg={lam:1}"], "skillpack.fusion.mergers.avg"),
    (["stage=skillpack", "++skillpack.methods.dense.head=dense"], "skillpack.methods.dense.head"),
    (["stage=skillpack", "skillpack.methods.dense.mlp=gzip"], "skillpack.methods.dense.mlp"),
    (["stage=skillpack", "skillpack.methods.graftllm.attention.schedule=[[4,5]]"],
     "skillpack.methods.graftllm.attention.schedule"),
    (["stage=skillpack_continual", "continual.tasks=[]"], "continual.tasks"),
    (["stage=transplant", "transplant.alphas=[1.5]"], "transplant.alphas"),
    (["stage=transplant", "transplant.source={source:random,seed:-3}"], "transplant.source.seed"),
    (["stage=pretrain", "stage.ship=1"], "stage.ship"),
])
def test_stage_keys_name_the_key(tmp_path, overrides, key):
    cfg = compose_config(["debug=smoke", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=rf"\[{key}\]"):
        validate_config(cfg)


def test_a_copied_value_is_reported_where_it_was_written(tmp_path):
    """task.n is copied into skill.tasks.modadd.n by interpolation: the error names task.n."""
    cfg = compose_config(["stage=skillpack", "task.n=1"], tmp_path)
    with pytest.raises(ConfigError, match=r"^\[task.n\] must be greater than or equal to 2; got 1\.$"):
        validate_config(cfg)


def test_a_copied_node_is_reported_where_it_was_written(tmp_path):
    """dataloader.text is ${corpus}: a bad corpus value names corpus.*, not dataloader.text.*."""
    cfg = compose_config(["corpus.max_documents=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"^\[corpus.max_documents\]"):
        validate_config(cfg)


def test_origin_follows_interpolations_absolute_and_relative():
    from grafting.schema.config import origin

    raw = {"a": {"x": 1, "y": "${.x}", "z": "${..b.w}"}, "b": {"w": "${a.x}", "n": "${a}"}, "c": "${a.x}-${a.x}"}
    assert origin(raw, "a.y") == "a.x" and origin(raw, "a.z") == "a.x" and origin(raw, "b.n.x") == "a.x"
    assert origin(raw, "c") == "c" and origin(raw, "a.x") == "a.x" and origin(raw, "nope.x") == "nope.x"


def test_values_only_hydra_resolves_pass_in_text_and_fail_elsewhere(tmp_path):
    cfg = compose_config(["logger=wandb"], tmp_path)  # logger.wandb.name: ${hydra:job.override_dirname}
    with open_dict(cfg):
        cfg.paths.output_dir = "${hydra:runtime.output_dir}"
    validate_config(cfg)
    with open_dict(cfg):
        cfg.checkpoint_every = "${hydra:runtime.choices.x}"
    with pytest.raises(ConfigError, match=r"^\[checkpoint_every\] must be a valid integer"):
        validate_config(cfg)


@pytest.mark.parametrize("override,key", [
    ("+zz_typo=1", "zz_typo"), ("++finetune.lr_typo=0.1", "finetune.lr_typo"),
    ("++skill.tasks.reverse.n_wrds=3", "skill.tasks.reverse.n_wrds"), ("++host.pretrain.stepz=3", "host.pretrain.stepz"),
])
def test_unknown_keys_are_refused_naming_them(tmp_path, override, key):
    cfg = compose_config(["stage=skillpack", override], tmp_path)
    with pytest.raises(ConfigError, match=rf"^\[{key}\] is not a key"):
        validate_config(cfg)


def test_keyword_nodes_take_keys_they_do_not_list(tmp_path):
    """trainer, a logger and a model's arch are keyword arguments of Lightning / transformers classes."""
    validate_config(compose_config(["++trainer.benchmark=true", "++host.arch.layer_norm_eps=1e-5",
                                    "++logger.csv.flush_logs_every_n_steps=10"], tmp_path))


def test_default_config_is_valid_and_typed(tmp_path):
    config = validate_config(compose_config([], tmp_path))
    assert config.align.steps == 200 and config.graft.layer == 2 and config.host.arch.blocks == 4


def test_the_recipes_defaults_are_train_yaml(tmp_path):
    """The API's recipes and the stages read the same defaults: the schema's, equal to conf/train.yaml's."""
    from grafting.plain import plain_dict
    from grafting.schema.graft import Align, Evaluation, FinetuneNode, Loss

    cfg = compose_config([], tmp_path)
    assert Align.of(plain_dict(cfg.align)) == Align() and FinetuneNode.of(plain_dict(cfg.finetune)) == FinetuneNode()
    assert Loss.of(plain_dict(cfg.loss)) == Loss()  # loss=residual, the default group
    assert AlignConfig.of_config(plain_dict(cfg.align), plain_dict(cfg.loss)) == AlignConfig()
    assert FinetuneConfig.of_config(plain_dict(cfg.finetune)) == FinetuneConfig()
    assert DistillConfig.of(plain_dict(cfg.align.distill)) == DistillConfig()
    assert Evaluation.of(plain_dict(cfg.evaluation)) == Evaluation()
    assert EvalSettings.of_config(plain_dict(cfg.evaluation)) == EvalSettings()
    # A key left out of a config gets the same default (stages/common.py has no defaults of its own).
    assert AlignConfig.of_config({"steps": 5}, {"kind": "logits", "distance": "kl", "temperature": 1.0}) == \
        AlignConfig(steps=5, loss="logits")


@pytest.mark.parametrize("make,key", [
    (lambda: FinetuneConfig(lora_dropout=1.0), "finetune.lora_dropout"), (lambda: FinetuneConfig(method="qlora"), "finetune.method"),
    (lambda: FinetuneConfig(steps=True), "finetune.steps"), (lambda: DistillConfig(steps=0), "align.distill.steps"),
    (lambda: AlignConfig(reading="argmax"), "loss.reading"), (lambda: AlignConfig(stepz=3), "align.stepz"),
    (lambda: EvalSettings(task_points=0), "evaluation.task_points"),
    (lambda: EvalSettings(language={"kl_texts": -1}), "evaluation.language.kl_texts"),
    (lambda: LanguageSettings(mlm_model=3.5j), "evaluation.language.mlm_model"),
])
def test_recipes_name_the_key(make, key):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key


def test_the_schema_imports_no_torch():
    """``python train.py <bad value>`` fails in about a second: the schema and the registry names are light."""
    code = "import sys, grafting.schema, grafting.names; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_a_registry_that_drifts_from_its_names_fails_at_import():
    from grafting import names

    assert names.registry(("a", "b"), {"b": 2, "a": 1}) == {"b": 2, "a": 1}
    with pytest.raises(RuntimeError, match="grafting/names.py"):
        names.registry(("a", "b"), {"a": 1, "c": 3})


def test_lightning_names_match_lightning():
    """Lightning's accelerator and precision names are the one copy of an outside registry (reading them
    imports lightning, seconds); they must equal Lightning's."""
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from grafting.schema.config import PRECISIONS
    from grafting.schema.models import ACCELERATORS

    assert set(PRECISIONS) == {v for lit in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(lit)}
    assert set(AcceleratorRegistry.available_accelerators()) <= set(ACCELERATORS)


# The acceptance list: each fails before any model is loaded or built, naming the key. How fast is not
# asserted here (benchmarks/ measures time); an empty cache proves nothing was built first.
ACCEPTANCE = [
    (["evaluation.task_points=0"], "evaluation.task_points"),
    (["dataloader=mixed", "dataloader.mix_ratio=2"], "dataloader.mix_ratio"),
    (["align.lr=-1"], "align.lr"),
    (["finetune.lr=0"], "finetune.lr"),
    (["task.operand_max=1"], "task.operand_max"),
    (["evaluation.batch_size=0"], "evaluation.batch_size"),
    (["stage=skillpack", "skill.n_test=-1"], "skill.n_test"),
    (["stage=transplant", "transplant.k_list=[0]"], "transplant.k_list"),
]


@pytest.mark.parametrize("overrides,key", ACCEPTANCE, ids=[k for _, k in ACCEPTANCE])
def test_a_job_fails_before_loading_anything_naming_the_key(tmp_path, monkeypatch, overrides, key):
    cache = tmp_path / "cache"  # empty: a tokenizer or model built before the error would land here
    monkeypatch.setenv("GRAFTING_CACHE_DIR", str(cache))
    with pytest.raises(ConfigError) as err:
        run_job([*overrides, f"paths.cache_dir={cache}"], tmp_path)
    assert err.value.key == key, str(err.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_evaluate_validates_before_loading(tmp_path):
    from grafting.stages.evaluate import run

    cfg = compose_config([f"run_dir={tmp_path / 'no_such_run'}", "evaluation.batch_size=0"], tmp_path,
                         config_name="evaluate")
    with pytest.raises(ConfigError, match=r"\[evaluation.batch_size\]"):  # not [run_dir]: checked first
        run(cfg)


def test_missing_local_path():
    with pytest.raises(ConfigError, match=r"\[host.path\]"):
        load_model({"source": "local", "path": "/nonexistent/model"}, "host")


def test_unknown_source():
    with pytest.raises(ConfigError, match=r"\[donor.source\]"):
        load_model({"source": "ftp"}, "donor")


def test_empty_corpus_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    missing = OmegaConf.create({"source": "local", "files": [str(tmp_path / "nope.txt")]})
    with pytest.raises(ConfigError, match=r"dataloader.text.files"):
        load_text_dataset(missing)
    with pytest.raises(ConfigError, match=r"dataloader.text.files.*empty"):
        load_text_dataset(OmegaConf.create({"source": "local", "files": [str(empty)]}))


def test_different_tokenizers_are_detected(tokenizer):
    other = _ByteTokenizer()
    assert same_tokenizer(tokenizer, tokenizer)
    assert not same_tokenizer(tokenizer, other)


class _ByteTokenizer:
    """A stand-in tokenizer: one id per byte, EOS = 256."""

    eos_token_id = 256

    def __call__(self, texts, add_special_tokens=False):
        if isinstance(texts, str):
            return {"input_ids": list(texts.encode())}
        return {"input_ids": [list(t.encode()) for t in texts]}

    def get_vocab(self):
        return {chr(i): i for i in range(257)}


def test_bad_text_rows_are_skipped_and_counted():
    ds = TextChunkDataset(["", "   ", None, "a real sentence of text", 42, "more words here"], _ByteTokenizer(), 4)
    assert ds.skipped == 4
    assert len(ds) == (len("a real sentence of text") + len("more words here") + 2) // 4
    assert torch.equal(ds[0]["input_ids"], torch.tensor(list(b"a re")))


def test_overlong_and_empty_task_rows_are_skipped_and_counted():
    task = ModularAddition(n=4, operand_max=10, test_size=10)
    good = task.split("train")[:3]
    empty = ModExample(a=0, b=0, n=4, prompt="", completion=" The result is 0", answer=0)
    overlong = ModExample(a=0, b=0, n=4, prompt="x" * 500, completion=" The result is 0", answer=0)
    ds = TaskSFTDataset([*good, empty, overlong], _ByteTokenizer(), max_length=128)
    assert len(ds) == 3 and ds.skipped == 2
    labels = ds[0]["labels"]
    n_prompt = len(good[0].prompt.encode())
    assert (labels[:n_prompt] == -100).all() and (labels[n_prompt:] != -100).all()
