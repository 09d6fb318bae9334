"""The evaluation score cache: a hit returns the stored scores without evaluating; any change of weights misses."""

import json

import pytest
import torch
from conftest import compose_config, tiny_model

import grafting.evaluation.suite as suite
from grafting.metrics import language as language_metrics
from grafting.metrics import task as task_metrics
from grafting.stages.common import evaluate


def test_scores_are_read_back_and_keyed_by_weights(tmp_path, tokenizer, monkeypatch):
    cfg = compose_config(["debug=smoke", "evaluation.task_points=8", "evaluation.language.n_texts=2"], tmp_path)
    model, host = tiny_model(seed=0), tiny_model(seed=1)
    cache = tmp_path / "cache"
    first = evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    assert len(list((cache / "scores").glob("*/scores.json"))) == 1

    calls = []
    real = suite.evaluate_task
    monkeypatch.setattr(suite, "evaluate_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(suite, "workers_for", lambda n, device: 1)  # scored in this process: its calls are counted
    again = evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    assert calls == [] and json.dumps(again["M"], sort_keys=True) == json.dumps(first["M"], sort_keys=True)

    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # other weights: another key, evaluated again
    evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    assert calls == [1] and len(list((cache / "scores").glob("*/scores.json"))) == 2


@pytest.mark.parametrize("family", ["task", "language"])
def test_a_new_metric_version_misses_the_cache(tmp_path, tokenizer, monkeypatch, family):
    cfg = compose_config(["debug=smoke", "evaluation.task_points=8", "evaluation.language.n_texts=2",
                          "evaluation.language.mlm_model=null"], tmp_path)
    model, host = tiny_model(seed=0), tiny_model(seed=1)
    cache = tmp_path / "cache"
    calls = []
    real = suite.evaluate_task
    monkeypatch.setattr(suite, "evaluate_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(suite, "workers_for", lambda n, device: 1)  # scored in this process: its calls are counted
    evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    assert calls == [1]  # the second call read the scores back

    module = {"task": task_metrics, "language": language_metrics}[family]
    monkeypatch.setattr(module, "SCORE_VERSION", module.SCORE_VERSION + 1)  # a fixed metric: old scores are stale
    evaluate(cfg, {"M": model}, tokenizer, host=host, cache_dir=cache)
    assert calls == [1, 1] and len(list((cache / "scores").glob("*/scores.json"))) == 2
