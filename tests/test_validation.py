"""Bad input fails early with the config key named; bad data rows are skipped and counted."""

import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from grafting import validation
from grafting.data.corpus import load_text_dataset
from grafting.data.datasets import TaskSFTDataset, TextChunkDataset
from grafting.data.modular import ModExample, ModularAddition
from grafting.errors import ConfigError
from grafting.models.loading import load_model, same_tokenizer
from grafting.validation import validate_config

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
    with pytest.raises(ConfigError, match=r"^\[task.n\] must be an int >= 2; got 1\.$"):
        validate_config(cfg)


def test_default_config_is_valid(tmp_path):
    validate_config(compose_config([], tmp_path))


def test_registries_match_the_code():
    """validation.py spells out the registries (it must not import torch); they must equal the real ones."""
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    import grafting.skillpack  # noqa: F401 (registers every compressor)
    from grafting.data import datamodule, modular, skill_tasks, words
    from grafting.losses import DISTANCES, KINDS, READINGS
    from grafting.models import loading, pretrained_tiny
    from grafting.modules import layer_finetune
    from grafting.skillpack import compressors, merging, policy, quant
    from grafting.translators import TRANSLATORS
    from grafting.transplant import analysis, report

    pairs = {
        "TRANSLATORS": TRANSLATORS, "LOSS_KINDS": KINDS, "DISTANCES": DISTANCES, "READINGS": READINGS, "LOADER_KINDS": datamodule.KINDS,
        "FINETUNE_METHODS": layer_finetune.METHODS, "MODEL_SOURCES": loading.SOURCES,
        "MODEL_DTYPES": loading._DTYPES, "DATA_PARTS": pretrained_tiny.DATA_PARTS,
        "SKILL_KINDS": skill_tasks.TASK_KINDS, "WORD_MODES": words.MODES, "COMPRESSORS": compressors.COMPRESSORS,
        "POLICY_KEYS": policy.POLICY_KEYS, "MERGERS": merging.MERGERS, "PACK_DTYPES": quant._DTYPES,
        "QUANT_BITS": (*quant.SUPPORTED_BITS, quant.FP16_BITS), "SCORERS": analysis.SCORERS,
        "TASK_METRICS": report.TASK_KEYS, "TASK_KINDS": modular.KINDS,
        "PRECISIONS": [v for lit in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(lit)],
    }
    for name, real in pairs.items():
        assert set(getattr(validation, name)) == set(real), name
    assert set(AcceleratorRegistry.available_accelerators()) <= set(validation.ACCELERATORS)


# The acceptance list: each fails in < 20 s, before any model is loaded, naming the key.
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
def test_train_py_fails_fast_naming_the_key(tmp_path, overrides, key):
    cache = tmp_path / "cache"  # empty: a tokenizer or model built before the error would land here
    env = dict(os.environ, GRAFTING_CACHE_DIR=str(cache), HYDRA_FULL_ERROR="1", WANDB_MODE="disabled")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode != 0
    assert f"ConfigError: [{key}]" in proc.stderr, proc.stderr[-2000:]
    assert "in validate_config" in proc.stderr and "load_model" not in proc.stderr
    assert not cache.exists() or not any(cache.iterdir())
    assert seconds < 20, seconds


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
