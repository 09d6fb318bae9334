"""KLReference (the target's side of every KL, captured once) against the simple path it replaces."""

from __future__ import annotations

import pytest
import torch
from test_transplant_metrics import gpt2, neox

from grafting.stages.transplant import mean_kl
from grafting.transplant import candidate_modules, general_text_kl, transplanted
from grafting.transplant.shared import KLReference


@pytest.mark.parametrize("build", [neox, gpt2], ids=["gptneox", "gpt2"])
@pytest.mark.parametrize("batch_size,sub_batch", [(4, 4), (4, 3), (3, 2), (16, 16)])
@torch.no_grad()
def test_kl_reference_equals_mean_kl_over_batches(build, batch_size, sub_batch) -> None:
    tgt, src = build(1), build(0)
    chunks = torch.randint(1, 128, (10, 12), generator=torch.Generator().manual_seed(0))
    ref = KLReference.capture(tgt, chunks, batch_size, sub_batch)
    mean, per_text = ref.kl(tgt)
    assert mean == pytest.approx(0.0, abs=1e-6) and per_text.shape == (10,)
    with transplanted(tgt, src, candidate_modules(src, tgt)[:3]):
        mean, per_text = ref.kl(tgt)
        simple = mean_kl(build(1), tgt, chunks, batch_size)  # a fresh, untouched copy as the reference
        per_text_simple = torch.tensor([general_text_kl(build(1), tgt, row.unsqueeze(0)) for row in chunks])
    assert simple > 1e-3
    assert mean == pytest.approx(simple, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(per_text, per_text_simple, rtol=1e-5, atol=1e-6)
    # with the transplant undone, the same reference gives the target's zero again
    assert ref.kl(tgt)[0] == pytest.approx(0.0, abs=1e-6)


def test_kl_reference_weights_batches_by_their_tokens_as_mean_kl_does() -> None:
    tgt, src = neox(1), neox(0)
    chunks = torch.randint(1, 128, (5, 6), generator=torch.Generator().manual_seed(1))
    with transplanted(tgt, src, candidate_modules(src, tgt)[:2]):
        moved = neox(1)
        moved.load_state_dict(tgt.state_dict())
    ref = KLReference.capture(tgt, chunks, batch_size=2, sub_batch=1)  # batches of 2, 2 and 1 texts
    assert ref.kl(moved)[0] == pytest.approx(mean_kl(tgt, moved, chunks, 2), rel=1e-5)
