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
