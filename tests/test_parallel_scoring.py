"""Scoring models in forked single-thread workers gives the scores of scoring them one after another."""

import json
import os

import pytest
import torch
from conftest import compose_config, tiny_model

from grafting.evaluation.parallel import map_forked, workers_for
from grafting.stages.common import evaluate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")


def _square(x: int) -> int:
    return x * x


def test_map_forked_keeps_order_and_raises():
    assert map_forked(_square, list(range(7)), 3) == [x * x for x in range(7)]
    with pytest.raises(ZeroDivisionError):
        map_forked(lambda x: 1 // x, [1, 0, 2], 2)


def test_workers_follow_the_thread_budget():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert workers_for(6, torch.device("cpu")) == 1
        torch.set_num_threads(3)
        assert workers_for(6, torch.device("cpu")) == 3 and workers_for(2, torch.device("cpu")) == 2
        assert workers_for(6, torch.device("cuda")) == 1
    finally:
        torch.set_num_threads(threads)


def test_forked_scores_are_the_sequential_ones(tmp_path, tokenizer):
    cfg = compose_config(["debug=smoke", "evaluation.task_points=8", "evaluation.language.n_texts=3"], tmp_path)
    models = {f"M{i}": tiny_model(seed=i) for i in range(3)}
    host = tiny_model(seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a budget of one thread: every model in this process
        sequential = evaluate(cfg, models, tokenizer, host=host)
        torch.set_num_threads(2)  # two workers of one thread each
        forked = evaluate(cfg, models, tokenizer, host=host)
    finally:
        torch.set_num_threads(threads)
    assert list(forked) == list(models)
    assert json.dumps(forked, sort_keys=True) == json.dumps(sequential, sort_keys=True)
