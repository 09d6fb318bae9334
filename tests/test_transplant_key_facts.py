"""The key -> digit fact table of the transplant models."""

from __future__ import annotations

import pytest

from grafting.data.key_facts import KeyFacts
from grafting.errors import ConfigError
from grafting.metrics.task import score_task


def test_facts_are_deterministic_and_scored_like_modadd():
    table = KeyFacts(n_keys=20, n_values=4, seed=3)
    facts = table.split("test")
    assert facts == KeyFacts(n_keys=20, n_values=4, seed=3).split("train")
    assert facts != KeyFacts(n_keys=20, n_values=4, seed=4).split("test")
    assert sorted(f.a for f in facts) == list(range(20))
    for f in facts:
        assert f.completion == f" The result is {f.answer}" and 0 <= f.answer < 4
    right = score_task([f.completion.strip() for f in facts], [f.answer for f in facts])
    wrong = score_task([f"The result is {(f.answer + 1) % 4}" for f in facts], [f.answer for f in facts])
    assert right["fact"] == 1.0 and wrong["fact"] == 0.0 and wrong["f_H"] == 1.0


@pytest.mark.parametrize("kwargs,key", [({"n_values": 1}, "n_values"), ({"n_keys": 0}, "n_keys"),
                                        ({"prompt_template": "no key"}, "prompt_template")])
def test_bad_tables_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        KeyFacts(**kwargs)
