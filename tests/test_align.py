"""Translator alignment: phases move only their translator, losses fall, no wasted block calls."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.graft.grafted import build_grafted, graft_of
from grafting.modules.translator_align import TranslatorAlignModule


def _batches(n: int, vocab: int = 512):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        ids = torch.randint(0, vocab, (4, 16), generator=g)
        yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _fit(module: TranslatorAlignModule, steps: int) -> list[float]:
    opt = module.configure_optimizers()
    losses = []
    for batch in _batches(steps):
        loss = module.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,distance", [("residual", "mse"), ("residual", "cosine"), ("residual", "kl"),
                                           ("logits", "kl")])
def test_phases_train_only_their_translator(kind, distance):
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    _, graft = graft_of(grafted)
    host_state, donor_state = _snapshot(host), _snapshot(donor)
    pre0, post0, block0 = _snapshot(graft.pre_translator), _snapshot(graft.post_translator), _snapshot(graft.block)

    pre_losses = _fit(TranslatorAlignModule(grafted, host, donor, 1, "pre", kind, distance, lr=1e-2), 12)
    pre1 = _snapshot(graft.pre_translator)
    assert not _same(pre0, pre1) and _same(post0, _snapshot(graft.post_translator))
    assert pre_losses[-1] < pre_losses[0]

    post_losses = _fit(TranslatorAlignModule(grafted, host, donor, 1, "post", kind, distance, lr=1e-2), 12)
    assert _same(pre1, _snapshot(graft.pre_translator))
    assert not _same(post0, _snapshot(graft.post_translator))
    assert post_losses[-1] < post_losses[0]
    assert _same(block0, _snapshot(graft.block))
    assert _same(host_state, _snapshot(host)) and _same(donor_state, _snapshot(donor))


def test_residual_targets_are_the_reference_streams():
    """At init (identity translators, donor == host copy at the same layer) both losses are exactly 0."""
    host = tiny_model("gpt_neox", seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1)
    batch = next(_batches(1))
    for phase in ("pre", "post"):
        loss = TranslatorAlignModule(grafted, host, host, 1, phase, "residual", "mse").loss(batch)
        assert loss.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_no_block_after_the_graft_is_computed(phase):
    host = tiny_model("gpt_neox", seed=0, num_hidden_layers=4)
    donor = tiny_model("gpt_neox", seed=1, num_hidden_layers=4)
    layer, dest = 1, 1
    grafted = build_grafted(host, donor, layer=layer, dest=dest)
    module = TranslatorAlignModule(grafted, host, donor, layer, phase, "residual", "mse")
    calls = []
    handles = []
    for name, model in (("host", host), ("donor", donor), ("grafted", grafted)):
        for i, block in enumerate(surgery.get_blocks(model)):
            # forward (post) hooks: a block counts only if it was actually computed
            handles.append(block.register_forward_hook(lambda m, a, o, name=name, i=i: calls.append((name, i))))
    module.loss(next(_batches(1)))
    for h in handles:
        h.remove()
    host_blocks = [i for n, i in calls if n in ("host", "grafted")]
    donor_blocks = [i for n, i in calls if n == "donor"]
    assert all(i <= dest for i in host_blocks), calls   # never a host block after j
    assert all(i < layer for i in donor_blocks), calls  # never donor block i or later
    if phase == "pre":
        assert dest not in [i for n, i in calls if n == "grafted"]  # the graft itself is not needed


@pytest.mark.parametrize("phase", ["pre", "post"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_logit_lens_kl_is_the_plain_one(phase, temperature):
    """The module's chunked logit-lens KL (losses.lens_kl) gives the loss and translator gradient of the plain
    path: both streams decoded through the reference's final norm and unembedding, then kl()."""
    host = tiny_model("gpt_neox", seed=0, num_hidden_layers=3)
    donor = tiny_model("gpt_neox", seed=1, num_hidden_layers=3)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    module = TranslatorAlignModule(grafted, host, donor, 1, phase, "residual", "kl", temperature=temperature,
                                   reading="logit_lens")
    assert module.fused_lens
    batch = next(_batches(1))
    batch["attention_mask"][1, 10:] = 0
    params = list(module.translator.parameters())
    fast = module.loss(batch)
    grads_fast = torch.autograd.grad(fast, params)
    module.fused_lens = False
    plain = module.loss(batch)
    grads_plain = torch.autograd.grad(plain, params)
    torch.testing.assert_close(fast, plain)
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
@pytest.mark.parametrize("span", [1, 2])
def test_post_t_on_the_kept_host_prefix_is_bitwise_the_same(family, span):
    """Post-T reading the host prefix Pre-T kept (PrefixCache) gives exactly the inputs and targets it computes
    from scratch, and the cache is used (the host blocks before j do not run again)."""
    from grafting.modules.translator_align import PrefixCache

    host = tiny_model(family, seed=0, num_hidden_layers=4)
    donor = tiny_model(family, seed=1, num_hidden_layers=4)
    grafted = build_grafted(host, donor, layer=1, dest=1, span=span)
    batch = next(_batches(1))
    batch["attention_mask"][1, 12:] = 0
    cache = PrefixCache()
    pre = TranslatorAlignModule(grafted, host, donor, 1, "pre", "residual", "mse", prefix_cache=cache)
    pre.translator_io(batch)
    assert len(cache.entries) == 1
    plain = TranslatorAlignModule(grafted, host, donor, 1, "post", "residual", "mse").translator_io(batch)
    post = TranslatorAlignModule(grafted, host, donor, 1, "post", "residual", "mse", prefix_cache=cache)
    calls = []
    handle = surgery.get_blocks(grafted)[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        kept = post.translator_io(batch)
    finally:
        handle.remove()
    assert calls == []  # host block 0 (before the graft) did not run
    for a, b in zip(kept, plain, strict=True):
        assert torch.equal(a, b)
