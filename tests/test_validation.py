"""Bad input fails early with the config key named; bad data rows are skipped and counted."""

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from grafting.data.corpus import load_text_dataset
from grafting.data.datasets import TaskSFTDataset, TextChunkDataset
from grafting.data.modular import ModExample, ModularAddition
from grafting.errors import ConfigError
from grafting.models.loading import load_model, same_tokenizer
from grafting.validation import validate_config


@pytest.mark.parametrize("override,key", [
    ("loss.distance=l1", "loss.distance"), ("loss.kind=hidden", "loss.kind"),
    ("graft.strategy=sideways", "graft.strategy"), ("graft.translator=mlp", "graft.translator"),
    ("task.n=1", "task.n"), ("dataloader.kind=video", "dataloader.kind"), ("align.steps=0", "align.steps"),
])
def test_validate_config_names_the_key(tmp_path, override, key):
    cfg = compose_config(["debug=smoke", override], tmp_path)
    with pytest.raises(ConfigError, match=rf"\[{key}\]"):
        validate_config(cfg)


def test_default_config_is_valid(tmp_path):
    validate_config(compose_config([], tmp_path))


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
