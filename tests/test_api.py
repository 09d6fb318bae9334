"""The typed API: presets as plain dicts, and a graft saved and rebuilt with no config at all."""

import pytest
import torch
from conftest import tiny_model

from grafting import api
from grafting.errors import ConfigError
from grafting.graft.grafted import graft_of


def test_model_spec_is_plain_and_resolved():
    spec = api.model_spec("tiny-host")
    assert spec["source"] == "tiny_pretrained" and spec["arch"]["model_type"] == "gpt_neox"
    assert "${" not in repr(spec)
    with pytest.raises(ConfigError, match="no preset"):
        api.model_spec("no-such-model")


@pytest.mark.parametrize("translator", ["linear", "affine"])
def test_save_graft_then_load_graft_rebuilds_it(tmp_path, translator):
    host, donor = tiny_model(seed=1, hidden_size=96), tiny_model(seed=0)  # rectangular: 96 vs 64
    grafted = api.build_graft(host, donor, layer=1, dest=2, translator=translator)
    with torch.no_grad():
        for p in graft_of(grafted)[1].parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the identity any more
    api.save_graft(grafted, tmp_path / "graft")
    loaded = api.load_graft(host, donor, tmp_path / "graft")
    ids = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, grafted(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"solver": "Adam"}, "align.solver"), ({"steps": -5}, "align.steps"), ({"steps": 2.5}, "align.steps"),
    ({"init": "zeros"}, "align.init"), ({"lr": 0.0}, "align.lr"), ({"weight_decay": -1.0}, "align.weight_decay"),
    ({"distance": "l2"}, "loss.distance"), ({"loss": "residuals"}, "loss.kind"), ({"temperature": 0}, "loss.temperature"),
])
def test_align_config_names_the_bad_field(kwargs, key):
    with pytest.raises(ConfigError) as error:
        api.AlignConfig(**kwargs)
    assert error.value.key == key and repr(next(iter(kwargs.values()))) in str(error.value)
    api.AlignConfig(weight_decay=0.0, limit_val_batches=0)  # the edges that are allowed
