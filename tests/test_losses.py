"""Alignment losses against hand computations."""

import pytest
import torch
import torch.nn.functional as F

from grafting.errors import ConfigError
from grafting.losses import cosine, get_distance, kl, mse


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
