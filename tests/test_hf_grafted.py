"""Grafted and SkillPack-merged models round-trip through save_pretrained / AutoModelForCausalLM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM

from grafting import surgery
from grafting.graft.grafted import GraftedBlock, build_grafted, graft_of
from grafting.graft.hf.modeling import GraftedForCausalLM, to_hf_grafted
from grafting.skillpack import apply_packs_, compress_delta, compute_delta, export_merged, model_fingerprint
from grafting.skillpack.pack import load_pack, save_pack

ROOT = Path(__file__).resolve().parents[1]


def _nudge_(model: torch.nn.Module, seed: int, scale: float = 0.02) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _grafted(family: str, translator: str = "linear", **host_overrides) -> torch.nn.Module:
    host, donor = tiny_model(family, seed=0, **host_overrides), tiny_model(family, seed=1)
    grafted = build_grafted(host, donor, layer=2, dest=1, translator=translator)
    _nudge_(graft_of(grafted)[1], seed=2)  # trained-looking translators, not the identity
    return grafted


def _assert_same_model(saved: torch.nn.Module, loaded: torch.nn.Module, batch: dict) -> None:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits,
                           saved(input_ids=ids, attention_mask=mask).logits)
    kwargs = dict(max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(loaded.generate(input_ids=ids, attention_mask=mask, **kwargs),
                       saved.generate(input_ids=ids, attention_mask=mask, **kwargs))


def test_grafted_round_trip(family, batch, tmp_path):
    grafted = _grafted(family)
    grafted.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, GraftedForCausalLM)
    assert graft_of(loaded.host)[0] == 1 and loaded.config.layer == 2
    _assert_same_model(grafted, loaded, batch)


@pytest.mark.parametrize("translator", ["linear", "affine"])
def test_rectangular_graft_round_trip(batch, tmp_path, translator):
    """A width-64 donor block in a width-96 host, saved through the wrapper."""
    grafted = _grafted("llama", translator, hidden_size=96)
    wrapped = to_hf_grafted(grafted)
    wrapped.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["translator"] == translator
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert graft_of(loaded.host)[1].block.self_attn.q_proj.in_features == 64
    _assert_same_model(wrapped, loaded, batch)


def test_reloaded_model_saves_again_and_loads_in_bfloat16(batch, tmp_path):
    grafted = _grafted("gpt_neox")
    grafted.save_pretrained(tmp_path / "a")
    AutoModelForCausalLM.from_pretrained(tmp_path / "a").host.save_pretrained(tmp_path / "b")
    _assert_same_model(grafted, AutoModelForCausalLM.from_pretrained(tmp_path / "b"), batch)
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "a", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half(batch["input_ids"]).logits.dtype == torch.bfloat16


def test_old_path_never_saves_a_plain_host(tmp_path):
    """save_pretrained on the grafted host writes the grafted format, not a host with a random block."""
    grafted = _grafted("gpt2")
    grafted.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "grafted"
    # a graft assembled by hand records no donor: saving it is an error, not a broken folder
    dest, graft = graft_of(grafted)
    surgery.swap_block_(grafted, dest, GraftedBlock(graft.block, graft.pre_translator, graft.post_translator))
    with pytest.raises(ValueError, match="donor config"):
        grafted.save_pretrained(tmp_path / "bare")
    assert not (tmp_path / "bare").exists()


def test_export_merged_round_trip(batch, tmp_path):
    base = tiny_model("gpt_neox", seed=0)
    tuned = tiny_model("gpt_neox", seed=0)
    _nudge_(tuned, seed=3)
    delta = compute_delta(base.state_dict(), tuned.state_dict())
    pack = load_pack(save_pack(compress_delta(delta), model_fingerprint(base), tmp_path / "pack"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    export_merged(base, pack, tmp_path / "merged")
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # base left unchanged
    merged = tiny_model("gpt_neox", seed=0)
    apply_packs_(merged, pack)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = batch["input_ids"]
    with torch.no_grad():
        assert not torch.equal(merged(ids).logits, base(ids).logits)
    _assert_same_model(merged, loaded, batch)


def test_import_grafting_is_light_and_graft_hf_registers_the_auto_classes(tmp_path):
    """A fresh process: `import grafting` imports no torch or transformers; `import grafting.graft.hf` (which
    grafting.api and the stages import) then makes AutoConfig and AutoModelForCausalLM know saved grafts."""
    _grafted("gpt_neox").save_pretrained(tmp_path)
    code = ("import sys, grafting\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
            "import grafting.graft.hf\n"
            "from transformers import AutoConfig, AutoModelForCausalLM\n"
            f"print(type(AutoConfig.from_pretrained({str(tmp_path)!r})).__name__)\n"
            f"print(type(AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["GraftedConfig", "GraftedForCausalLM"]
