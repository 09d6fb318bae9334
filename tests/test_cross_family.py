"""A block of one architecture family grafted into a host of another, for every ordered pair of GPTNeoX,
GPT-2 and Llama: the graft computes what the donor block computes in its own model, generates with a KV
cache as without, and saves and reloads as the same model."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM

from grafting import surgery
from grafting.graft.grafted import build_grafted, graft_of

PAIRS = [p for p in itertools.permutations(("gpt_neox", "gpt2", "llama"), 2)]


def _pair(host_family: str, donor_family: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    host, donor = tiny_model(host_family, seed=0), tiny_model(donor_family, seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    with torch.no_grad():  # translators that are not the identity, so that their use is checked too
        g = torch.Generator().manual_seed(2)
        graft = graft_of(grafted)[1]
        for translator in (graft.pre_translator, graft.post_translator):
            translator.weight.add_(0.05 * torch.randn(translator.weight.shape, generator=g))
    return host, donor, grafted.eval()


@pytest.mark.parametrize(("host_family", "donor_family"), PAIRS)
@torch.no_grad()
def test_the_graft_computes_what_the_donor_block_computes_in_its_own_model(host_family, donor_family, batch):
    """Reference: the donor block called with the arguments the *donor's own* forward builds for it (its mask,
    its rotary positions), on the translated host residual; the graft must give the same output."""
    _, donor, grafted = _pair(host_family, donor_family)
    ids = batch["input_ids"]
    graft = graft_of(grafted)[1]
    assert graft.cross_family and (graft.host_family, graft.donor_family) == (host_family, donor_family)
    seen = {}
    handle = graft.register_forward_hook(lambda m, args, out: seen.update(h=args[0], out=out))
    grafted(input_ids=ids, use_cache=False)
    handle.remove()
    _, args, kwargs = surgery.block_inputs(donor, ids, 1)
    donor_out = surgery.get_blocks(donor)[1](graft.pre_translator(seen["h"]), *args, **kwargs)
    donor_out = donor_out[0] if isinstance(donor_out, tuple) else donor_out
    out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
    torch.testing.assert_close(out, graft.post_translator(donor_out), rtol=1e-5, atol=1e-5)
    # and the translated call is not a no-op: a donor block of another position gives another output
    other = surgery.get_blocks(donor)[0](graft.pre_translator(seen["h"]), *args, **kwargs)
    other = other[0] if isinstance(other, tuple) else other
    assert not torch.allclose(graft.post_translator(other), out, atol=1e-4)


@pytest.mark.parametrize(("host_family", "donor_family"), PAIRS)
@torch.no_grad()
def test_a_cross_family_graft_generates_with_a_cache_as_without(host_family, donor_family, batch):
    _, _, grafted = _pair(host_family, donor_family)
    ids = batch["input_ids"][:1]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(grafted.generate(ids, use_cache=True, **kwargs),
                               grafted.generate(ids, use_cache=False, **kwargs))


@pytest.mark.parametrize(("host_family", "donor_family"), PAIRS)
@torch.no_grad()
def test_a_cross_family_graft_saves_and_reloads_with_identical_logits(host_family, donor_family, batch, tmp_path):
    _, donor, grafted = _pair(host_family, donor_family)
    grafted.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(graft_of(loaded.host)[1].block) is type(surgery.get_blocks(donor)[1])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits,
                               grafted(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=0)


@pytest.mark.parametrize(("donor", "variant"), [("tiny-random-llama", "paper"), ("tiny-random-gpt2", "paper"),
                                              ("tiny-random-llama", "procrustes_distill")])
def test_the_pipeline_grafts_across_families(donor, variant, tmp_path):
    """`python train.py debug=smoke donor=<another family> +variant=<method>`: fine-tune, align, score, with both
    controls (the methods of docs/GRAFT_ACROSS_MODELS.md; the own one fits a rotation across families first)."""
    import json

    from conftest import run_job

    run = run_job(["debug=smoke", f"donor={donor}", f"+variant={variant}"], tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["donor"]["arch"]["model_type"] != results["config"]["host"]["arch"]["model_type"]
    assert {"Tuned", "Grafted", "VanillaGraft", "IdentityGraft", "Vanilla", "Host"} <= set(results["models"])
    assert all(0.0 <= results["models"][m]["f_S"] <= 1.0 for m in ("Grafted", "VanillaGraft"))
    if variant == "procrustes_distill":
        assert results["config"]["align"]["init"] == "procrustes"
        assert {"distill", "distill_vanilla"} <= set(results["align"])
