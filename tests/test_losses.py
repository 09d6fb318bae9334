"""Alignment losses against hand computations."""

import pytest
import torch
import torch.nn.functional as F

from grafting.errors import ConfigError
from grafting.graft.losses import cosine, get_distance, kl, labelled_lm_loss, lens_kl, mse


def test_losses_against_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    keep = mask.bool()
    torch.testing.assert_close(mse(a, b, mask), ((a - b) ** 2)[keep].mean())
    torch.testing.assert_close(cosine(a, b, mask), (1 - F.cosine_similarity(a, b, dim=-1))[keep].mean())
    ref = F.kl_div(F.log_softmax(a, -1)[keep], F.log_softmax(b, -1)[keep], log_target=True, reduction="batchmean")
    torch.testing.assert_close(kl(a, b, mask), ref)
    assert kl(a, a).abs() < 1e-6 and mse(a, a) == 0


def test_unknown_distance():
    with pytest.raises(ConfigError, match="loss.distance"):
        get_distance("l1")


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_fast_backward_matches_autograd(temperature):
    """The closed-form backward of KL to a fixed target equals autograd through the plain formula."""
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    # the fast path is taken because target needs no gradient; the reference keeps target in the graph
    fast = kl(pred, target, mask, temperature)
    (grad_fast,) = torch.autograd.grad(fast, pred)
    pred_ref = pred.detach().clone().requires_grad_(True)
    target_ref = target.clone().requires_grad_(True)
    ref = kl(pred_ref, target_ref, mask, temperature)
    (grad_ref,) = torch.autograd.grad(ref, pred_ref)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(grad_fast, grad_ref)
    p = torch.softmax(target.float() / temperature, -1)
    log_q = torch.log_softmax(pred.detach().float() / temperature, -1)
    by_hand = ((p * (p.log() - log_q)).sum(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(fast, by_hand)


def _lens_kl_by_autograd(hidden, target, unembed, mask, temperature):
    """The plain formula: both logits tensors in full, autograd through log_softmax."""
    log_p = F.log_softmax(unembed(target) / temperature, -1)
    log_q = F.log_softmax(unembed(hidden) / temperature, -1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (per_position * mask).sum() / mask.sum()


@pytest.mark.parametrize("temperature,bias,chunk", [(1.0, False, 4), (2.0, True, 3), (1.0, True, None),
                                                    (0.5, False, 100)])
def test_lens_kl_matches_the_formula(temperature, bias, chunk):
    """The chunked logit-lens KL gives the value and the gradient of the full formula (chunks that do not
    divide the positions, a bias, a temperature, padding)."""
    gen = torch.Generator().manual_seed(0)
    unembed = torch.nn.Linear(6, 37, bias=bias).double().requires_grad_(False)
    with torch.no_grad():
        unembed.weight.copy_(torch.randn(37, 6, generator=gen, dtype=torch.float64) * 2)
    hidden = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    fast = lens_kl(hidden, target, unembed, mask, temperature, chunk)
    (grad_fast,) = torch.autograd.grad(3.0 * fast, hidden)
    ref = _lens_kl_by_autograd(hidden, target, unembed, mask, temperature)
    (grad_ref,) = torch.autograd.grad(3.0 * ref, hidden)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(grad_fast, grad_ref)
    # the float32 default path agrees with kl() on the logits to float rounding
    h32, t32, u32 = hidden.detach().float(), target.float(), unembed.float()
    torch.testing.assert_close(lens_kl(h32, t32, u32, mask, temperature, chunk),
                               kl(u32(h32), u32(t32), mask, temperature), rtol=1e-5, atol=1e-6)


def test_lens_kl_without_grad_and_frozen_target():
    gen = torch.Generator().manual_seed(1)
    unembed = torch.nn.Linear(4, 9, bias=False).requires_grad_(False)
    a, b = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(lens_kl(a, b, unembed), kl(unembed(a), unembed(b)))
    assert lens_kl(a, a, unembed).abs() < 1e-6
    with pytest.raises(ValueError, match="frozen"):
        lens_kl(a, b.requires_grad_(True), unembed)


@pytest.mark.parametrize("lora", [False, True])
def test_labelled_lm_loss_is_the_models_loss(family, lora):
    """Unembedding only the labelled positions gives transformers' loss and the same gradients (every family,
    with peft's LoRA layers in the model as the block fine-tune has them)."""
    from conftest import VOCAB, tiny_model
    from peft import LoraConfig, get_peft_model

    from grafting import surgery

    model = tiny_model(family, seed=0)
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, target_modules=list(surgery.architecture(model).lora_targets),
                                                 init_lora_weights=False)).get_base_model()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # right padding, as pad_collate makes it
    labels = torch.full_like(ids, -100)
    labels[:, 5:7] = ids[:, 5:7]  # an "answer" in the middle
    labels[1, 9] = ids[1, 9]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    params = [p for p in model.parameters() if p.requires_grad]
    fast = labelled_lm_loss(model, batch)
    grads_fast = torch.autograd.grad(fast, params)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    grads_ref = torch.autograd.grad(ref, params)
    torch.testing.assert_close(fast, ref)
    for a, b in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
