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


def test_sweep_evaluated_side_by_side_equals_one_at_a_time() -> None:
    """Sweep.evaluate_all (forked single-thread workers) gives every condition the same entry, bit for bit,
    as Sweep.evaluate computing the conditions one after another in this process."""
    from omegaconf import OmegaConf

    from grafting import api
    from grafting.data.modular import ModularAddition
    from grafting.stages.transplant import Sweep

    target, source, tokenizer = api.load_pair("tiny-host", "tiny-vanilla")
    tp = OmegaConf.create({"eval_points": 8, "eval_batch_size": 8, "max_new_tokens": 3, "kl_batch_size": 4})
    chunks = torch.randint(5, 4000, (6, 10), generator=torch.Generator().manual_seed(0))
    modules = candidate_modules(source, target)
    conditions = [(modules[:1], 1.0, True), (modules[2:5], 1.0, True), (modules[:1], 0.5, False),
                  (modules[4:1:-1], 1.0, True), (modules[6:8], 1.0, False)]  # the fourth repeats the second
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers, even on a one-core runner
    try:
        side_by_side = Sweep(tp, ModularAddition(test_size=8), target, source, tokenizer, chunks)
        side_by_side.evaluate_all(conditions)
    finally:
        torch.set_num_threads(threads)
    assert side_by_side.n_evaluations == 4
    one_at_a_time = Sweep(tp, ModularAddition(test_size=8), target, source, tokenizer, chunks)
    for names, alpha, kl in conditions:
        expected = one_at_a_time.evaluate(names, alpha, kl)
        assert side_by_side.evaluate(names, alpha, kl) == expected
        assert (expected["kl"] is not None) == any(kl for n, a, kl in conditions if set(n) == set(names) and a == alpha)
    assert side_by_side.evaluate(modules[:1], 1.0)["kl"] > 0  # a transplant moved the target
