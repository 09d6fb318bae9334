"""Fault injection, one test per cache kind: a damaged entry is recomputed with one warning, to the same numbers.

Each kind builds its entry once in a clean cache (module fixture); each case copies that cache, applies one
fault (``cache_faults.FAULTS``), runs the code that reads the entry again and compares with the clean run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from cache_faults import FAULTS, assert_recomputed, cache_warnings, damage
from conftest import VOCAB, compose_config, tiny_model

from grafting.errors import ConfigError
from grafting.graft.grafted import build_grafted, graft_of
from grafting.models.loading import load_model
from grafting.models.tokenizer import builtin_tokenizer
from grafting.plain import plain
from grafting.pretraining import ensure_pretrained
from grafting.pretraining.transplant_pair import load_role
from grafting.run_context import RunContext
from grafting.stages import common
from grafting.stages.transplant import recipe_from_config

TEXT = "Return the number of items in a container; the argument may be a sequence or a collection."


@pytest.fixture(scope="module", autouse=True)
def _small_corpus():
    """Pretraining tokenizes the whole built-in corpus (2 s a model): a slice keeps each recompute short."""
    import grafting.pretraining.causal_lm as causal_lm
    import grafting.pretraining.transplant_pair as pair
    from grafting.data.corpus import builtin_documents

    documents = causal_lm.training_documents
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(causal_lm, "training_documents", lambda part: documents(part)[:40])
        patch.setattr(pair, "builtin_documents", lambda: builtin_documents()[:200])
        yield


def _only_entry(root: Path, kind: str) -> Path:
    entries = [p for p in (root / kind).iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def _damaged_copy(clean_root: Path, tmp_path: Path, kind: str, fault: str) -> tuple[Path, Path, Path]:
    """A copy of the clean cache with ``fault`` applied to its ``kind`` entry: ``(root, entry, named file)``."""
    root = tmp_path / "cache"
    shutil.copytree(clean_root, root)
    entry = _only_entry(root, kind)
    return root, entry, damage(entry, fault)


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_model_recomputed(clean_root: Path, tmp_path: Path, caplog, kind: str, fault: str, reload, state) -> None:
    """Damage the ``kind`` entry of a copy of the clean cache: ``reload(root)`` (the load path, its warnings
    captured) gives the clean weights back, with one warning naming the file."""
    root, entry, named = _damaged_copy(clean_root, tmp_path, kind, fault)
    with caplog.at_level(logging.WARNING):
        reloaded = reload(root)
    assert _same_state(reloaded, state)
    assert_recomputed(caplog, entry, named, fault)


# ------------------------------------------------------------------------------------------ tokenizers

@pytest.fixture(scope="module")
def clean_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    tok = builtin_tokenizer(VOCAB, root)
    return root, tok(TEXT)["input_ids"], tok.get_vocab()


@pytest.mark.parametrize("fault", FAULTS)
def test_tokenizers(clean_tokenizer, tmp_path, caplog, fault):
    clean_root, ids, vocab = clean_tokenizer
    root, entry, named = _damaged_copy(clean_root, tmp_path, "tokenizers", fault)
    with caplog.at_level(logging.WARNING):
        tok = builtin_tokenizer(VOCAB, root)
    assert tok(TEXT)["input_ids"] == ids and tok.get_vocab() == vocab
    assert_recomputed(caplog, entry, named, fault)


# ------------------------------------------------------------------------------------ pretrained models

def _tiny_spec(tmp_path: Path) -> dict:
    cfg = compose_config(["debug=smoke", "host=tiny-host-indep", f"tiny.tokenizer_vocab={VOCAB}",
                          "tiny.arch.hidden_size=32", "tiny.pretrain.steps=2", "tiny.pretrain.batch_size=2",
                          "tiny.pretrain.seq_len=32", "tiny.pretrain.val_batches=1"], tmp_path)
    return {k: v for k, v in plain(cfg.host).items() if k != "shipped"}  # always from the cache


@pytest.fixture(scope="module")
def clean_pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    spec = _tiny_spec(root / "cfg")
    ensure_pretrained(spec, root)
    return root, spec, load_model(spec, "host", root)[0].state_dict()


@pytest.mark.parametrize("fault", FAULTS)
def test_pretrained_models(clean_pretrained, tmp_path, caplog, fault):
    clean_root, spec, state = clean_pretrained

    def reload(root):
        ensure_pretrained(spec, root)  # what train.py runs before loading any model
        return load_model(spec, "host", root)[0].state_dict()

    _assert_model_recomputed(clean_root, tmp_path, caplog, "pretrained", fault, reload, state)


def test_a_damaged_pretrained_model_that_is_not_retrained_here_is_a_clear_error(clean_pretrained, tmp_path, caplog):
    clean_root, spec, _ = clean_pretrained
    root, entry, named = _damaged_copy(clean_root, tmp_path, "pretrained", "flip_byte")
    with pytest.raises(ConfigError, match=rf"host.source.*no whole cache entry at {entry}.*ensure_pretrained"):
        load_model(spec, "host", root)  # a notebook that loads without pretraining first
    assert str(named) in cache_warnings(caplog)[0]


# ------------------------------------------------------------------------------------ transplant models

@pytest.fixture(scope="module")
def clean_transplant(tmp_path_factory):
    root = tmp_path_factory.mktemp("transplant")
    cfg = compose_config(["stage=transplant", f"tiny.tokenizer_vocab={VOCAB}",
                          "transplant.models.arch.num_hidden_layers=1", "transplant.models.pretrain.steps=2",
                          "transplant.models.pretrain.seq_len=32", "transplant.models.pretrain.batch_size=2",
                          "transplant.models.pretrain.fact_repeats=1", "transplant.models.task.n_keys=4"],
                         root / "cfg")
    recipe = recipe_from_config(cfg)
    return root, recipe, load_role(recipe, "pretrained", root)[0].state_dict()


@pytest.mark.parametrize("fault", FAULTS)
def test_transplant_models(clean_transplant, tmp_path, caplog, fault):
    clean_root, recipe, state = clean_transplant
    _assert_model_recomputed(clean_root, tmp_path, caplog, "transplant_models", fault,
                             lambda root: load_role(recipe, "pretrained", root)[0].state_dict(), state)


# ------------------------------------------------------------------- tuned blocks, alignments, scores

def _ctx(root: Path, tmp_path: Path, extra: list[str] = ()) -> RunContext:
    cfg = compose_config(["debug=smoke", "finetune.cache=true", "align.cache=true", "evaluation.task_points=8",
                          "evaluation.language.n_texts=2", *extra], tmp_path)
    cfg.paths.cache_dir = str(root)
    return RunContext(cfg=cfg, run_dir=tmp_path / "run")


@pytest.fixture(scope="module")
def clean_tuned(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("tuned")
    _, block = common.finetune_or_resume(_ctx(root, root / "job"), tiny_model(), tokenizer)
    return root, block.state_dict()


@pytest.mark.parametrize("fault", FAULTS)
def test_tuned_blocks(clean_tuned, tmp_path, tokenizer, caplog, fault):
    clean_root, state = clean_tuned
    root, entry, named = _damaged_copy(clean_root, tmp_path, "tuned_blocks", fault)
    with caplog.at_level(logging.WARNING):
        _, block = common.finetune_or_resume(_ctx(root, tmp_path), tiny_model(), tokenizer)
    assert _same_state(block.state_dict(), state)
    assert_recomputed(caplog, entry, named, fault)


def _align(root: Path, tmp_path: Path, tokenizer) -> tuple[dict, dict]:
    host, donor = tiny_model(seed=0), tiny_model(seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    history = common.align_from_config(_ctx(root, tmp_path), grafted, host, donor, tokenizer)
    return history, graft_of(grafted)[1].state_dict()


@pytest.fixture(scope="module")
def clean_alignment(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("alignments")
    return (root, *_align(root, root / "job", tokenizer))


@pytest.mark.parametrize("fault", FAULTS)
def test_alignments(clean_alignment, tmp_path, tokenizer, caplog, fault):
    clean_root, history, state = clean_alignment
    root, entry, named = _damaged_copy(clean_root, tmp_path, "alignments", fault)
    with caplog.at_level(logging.WARNING):
        again, translators = _align(root, tmp_path, tokenizer)
    assert again == history and _same_state(translators, state)
    assert_recomputed(caplog, entry, named, fault)


def _score(root: Path, tmp_path: Path, tokenizer) -> str:
    ctx = _ctx(root, tmp_path, ["evaluation.language.mlm_model=null"])
    scores = common.evaluate(ctx.cfg, {"M": tiny_model(seed=0)}, tokenizer, host=tiny_model(seed=1), cache_dir=root)
    return json.dumps(scores, sort_keys=True)


@pytest.fixture(scope="module")
def clean_scores(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("scores")
    return root, _score(root, root / "job", tokenizer)


@pytest.mark.parametrize("fault", FAULTS)
def test_scores(clean_scores, tmp_path, tokenizer, caplog, fault):
    clean_root, scores = clean_scores
    root, entry, named = _damaged_copy(clean_root, tmp_path, "scores", fault)
    with caplog.at_level(logging.WARNING):
        assert _score(root, tmp_path, tokenizer) == scores
    assert_recomputed(caplog, entry, named, fault)


def test_scores_cut_in_half_in_the_old_format_are_recomputed(clean_scores, tmp_path, tokenizer, caplog):
    """The issue's second row: a bare ``scores/<key>.json`` cut in half (the format before manifests)."""
    clean_root, scores = clean_scores
    root = tmp_path / "cache"
    shutil.copytree(clean_root, root)
    entry = _only_entry(root, "scores")
    legacy = entry.with_name(f"{entry.name}.json")
    text = (entry / "scores.json").read_text()
    legacy.write_text(text[: len(text) // 2])
    shutil.rmtree(entry)
    with caplog.at_level(logging.WARNING):
        assert _score(root, tmp_path, tokenizer) == scores
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and str(legacy) in warnings[0] and "recomputed" in warnings[0]
    assert not legacy.exists()
