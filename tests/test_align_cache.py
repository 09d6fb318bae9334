"""The shared cache of aligned translators (align.cache): what its key sees, and an exact read-back."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, tiny_model

from grafting import api
from grafting.graft.grafted import build_grafted, graft_of
from grafting.stages.common import alignment_cache_path


def test_saved_translators_read_back_exactly_and_a_second_writer_keeps_the_first(tmp_path):
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    graft = graft_of(grafted)[1]
    with torch.no_grad():
        graft.pre_translator.weight.add_(0.1)
        graft.post_translator.bias.add_(0.2)
    api.save_translators(grafted, tmp_path / "entry", {"pre": {"val_loss_after": 1.5}})
    fresh = build_grafted(host, donor, layer=1, dest=1)
    history = api.load_translators_(fresh, tmp_path / "entry")
    assert history == {"pre": {"val_loss_after": 1.5}}
    for a, b in zip(graft_of(fresh)[1].state_dict().values(), graft.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    api.save_translators(build_grafted(host, donor, 1, 1), tmp_path / "entry", {"other": {}})  # no error
    assert api.load_translators_(fresh, tmp_path / "entry") == history


def _key(tmp_path, overrides, grafted=None, donor=None):
    cfg = compose_config(["debug=smoke", *overrides], tmp_path)
    ctx = SimpleNamespace(cfg=cfg, cache_dir=tmp_path / "cache")
    donor = donor if donor is not None else tiny_model("gpt_neox", seed=1)
    grafted = grafted if grafted is not None else build_grafted(tiny_model("gpt_neox", seed=0), donor, 1, 1)
    return alignment_cache_path(ctx, grafted, donor).name


def test_the_key_changes_with_what_shapes_the_alignment_and_only_that(tmp_path):
    base = _key(tmp_path, [])
    assert base == _key(tmp_path, [])
    for change in (["seed=1"], ["dataloader.seq_len=32"], ["align.steps=5"], ["loss.distance=mse"],
                   ["align.solver=procrustes"], ["dataloader=mod"]):
        assert _key(tmp_path, change) != base, change
    # aligning on text does not depend on the task: a task sweep reuses the translators...
    assert _key(tmp_path, ["task.kind=lookup", "task.operand_max=8", "finetune.steps=7"]) == base
    # ...but alignment data that holds task items does
    assert _key(tmp_path, ["dataloader=mod"]) != _key(tmp_path, ["dataloader=mod", "task.operand_max=8"])
    # the graft as built: another block in it (strategy direct) or another host is another alignment
    donor = tiny_model("gpt_neox", seed=1)
    other_block = build_grafted(tiny_model("gpt_neox", seed=0), donor, 1, 1, block=tiny_model("gpt_neox", seed=2)
                                .gpt_neox.layers[1])
    assert _key(tmp_path, [], grafted=other_block, donor=donor) != base


@pytest.mark.slow  # two smoke jobs in this process
def test_a_second_run_reads_the_translators_back_and_scores_the_same(tmp_path, monkeypatch, caplog):
    from conftest import run_job

    cache = tmp_path / "shared-cache"  # both runs share one cache
    monkeypatch.setenv("GRAFTING_CACHE_DIR", str(cache))
    results = []
    for name in ("first", "second"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="grafting"):
            run_dir = run_job(["debug=smoke", "align.cache=true", f"paths.cache_dir={cache}"], tmp_path / name)
        results.append((json.loads((run_dir / "results.json").read_text()), caplog.text))
    (first, _), (second, log) = results
    assert "aligned translators from the cache" in log
    assert second["align"] == first["align"]
    assert second["models"]["Grafted"] == first["models"]["Grafted"]
    assert second["models"]["VanillaGraft"] == first["models"]["VanillaGraft"]
