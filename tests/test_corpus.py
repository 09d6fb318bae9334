"""The built-in corpus: the pruned walk lists the files rglob would, and a prefetched corpus is the harvested one."""

import sys
import sysconfig
from pathlib import Path

import pytest

from grafting.data import corpus


def test_stdlib_files_are_the_filtered_rglob():
    root = Path(sysconfig.get_paths()["stdlib"])
    expected = [p for p in sorted(root.rglob("*.py"))
                if not (p.relative_to(root).parts[0] in corpus._SKIP_TOP or "tests" in p.relative_to(root).parts)]
    assert corpus._stdlib_files(root) == expected


@pytest.fixture
def fresh_corpus(monkeypatch):
    """An empty corpus cache and a small stand-in harvest (the real one parses the standard library)."""
    docs = ["first document \u00e9\u4e2d \"quoted\"\n" * 20, "second\tdocument " * 30]
    calls = []

    def harvest():
        calls.append(1)
        return list(docs)

    monkeypatch.setattr(corpus, "_harvest", harvest)
    corpus.builtin_documents.cache_clear()
    corpus.builtin_fingerprint.cache_clear()
    yield docs, calls
    corpus.builtin_documents.cache_clear()
    corpus.builtin_fingerprint.cache_clear()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
def test_prefetched_corpus_is_the_harvested_one(fresh_corpus, monkeypatch):
    docs, calls = fresh_corpus
    monkeypatch.delitem(sys.modules, "torch")  # as in a job before its imports (restored after the test)
    corpus.prefetch_builtin_documents()
    assert corpus._prefetch is not None
    output = corpus._prefetch[1]
    assert corpus.builtin_documents() == tuple(docs)
    assert not calls  # harvested by the child, not here
    assert corpus._prefetch is None and not output.exists()


def test_no_prefetch_once_torch_is_loaded(fresh_corpus):
    docs, calls = fresh_corpus
    assert "torch" in sys.modules
    corpus.prefetch_builtin_documents()
    assert corpus._prefetch is None
    assert corpus.builtin_documents() == tuple(docs) and calls == [1]


def test_task_dataset_ids_are_one_call_per_text(tokenizer):
    """The batched tokenisation of TaskSFTDataset gives the ids of one tokenizer call per prompt and answer."""
    from grafting.data.datasets import IGNORE, TaskSFTDataset
    from grafting.data.modular import ModularAddition

    examples = ModularAddition().split("train")[:50]
    expected = []
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        expected.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    # the backend's own batch call, then the wrapper's (a padded call leaves padding set on the backend)
    for before in (lambda: tokenizer("x"), lambda: tokenizer(["a b", "a"], padding=True)):
        before()
        items = TaskSFTDataset(examples, tokenizer, 128).items
        assert [(it["input_ids"].tolist(), it["labels"].tolist()) for it in items] == expected
