"""Coarse-grained threads (grafting/threads.py): the same numbers bit for bit on any thread budget."""

import pytest
import torch
from conftest import tiny_model

from grafting import threads
from grafting.graft.grafted import build_grafted
from grafting.graft.losses import lens_kl
from grafting.modules.translator_align import PrefixCache, TranslatorAlignModule


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_region_gives_one_op_thread_and_restores(two_threads):
    with threads.single_op_threads() as budget:
        assert budget == 2 and torch.get_num_threads() == 1 and threads.budget() == 2
        with threads.single_op_threads() as inner:  # nested in the same thread: the same budget
            assert inner == 2
        in_pool = threads.run_all([lambda: threads.budget(), lambda: torch.is_grad_enabled()])
        assert in_pool[0] == 2  # the first task runs in the caller
    assert torch.get_num_threads() == 2 and threads.budget() == 1


def test_run_all_keeps_order_and_grad_mode(two_threads):
    with threads.single_op_threads(), torch.no_grad():
        out = threads.run_all([lambda i=i: (i, torch.is_grad_enabled()) for i in range(5)])
    assert out == [(i, False) for i in range(5)]
    with pytest.raises(ValueError):
        with threads.single_op_threads():
            threads.run_all([lambda: 1, lambda: (_ for _ in ()).throw(ValueError("x"))])


def _grads(module, batch):
    loss = module.loss(batch)
    grads = torch.autograd.grad(loss, list(module.translator.parameters()))
    return loss.detach(), grads


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_alignment_step_is_bitwise_the_same_on_two_threads(phase, two_threads):
    host = tiny_model("gpt_neox", seed=0, num_hidden_layers=3)
    donor = tiny_model("gpt_neox", seed=1, num_hidden_layers=3)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    g = torch.Generator().manual_seed(3)
    batch = {"input_ids": torch.randint(0, 512, (4, 40), generator=g), "attention_mask": torch.ones(4, 40).long()}
    results = {}
    for budget in (1, 2):
        torch.set_num_threads(budget)
        cache = PrefixCache()
        TranslatorAlignModule(grafted, host, donor, 1, "pre", "residual", "kl", reading="logit_lens",
                              prefix_cache=cache).translator_io(batch)  # Post-T reads the kept prefix
        module = TranslatorAlignModule(grafted, host, donor, 1, phase, "residual", "kl", reading="logit_lens",
                                       prefix_cache=cache)
        results[budget] = _grads(module, batch)
        assert torch.get_num_threads() == budget
    (loss1, grads1), (loss2, grads2) = results[1], results[2]
    assert torch.equal(loss1, loss2)
    for a, b in zip(grads1, grads2, strict=True):
        assert torch.equal(a, b)


def test_lens_kl_chunks_on_two_threads_are_bitwise_the_same(two_threads):
    g = torch.Generator().manual_seed(0)
    unembed = torch.nn.Linear(16, 300, bias=True).requires_grad_(False)
    hidden = torch.randn(2, 50, 16, generator=g, requires_grad=True)
    target = torch.randn(2, 50, 16, generator=g)
    out = []
    for budget in (1, 2):
        torch.set_num_threads(budget)
        with threads.single_op_threads():
            loss = lens_kl(hidden, target, unembed, chunk=7)
            out.append((loss.detach(), torch.autograd.grad(loss, hidden)[0]))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_distillation_step_is_bitwise_the_same_on_two_threads(two_threads):
    from grafting.modules.translator_distill import TranslatorDistillModule

    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 512, (3, 12), generator=g)
    labels = ids.clone()
    labels[:, :8] = -100
    step = {"task": {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels},
            "text": {"input_ids": torch.randint(0, 512, (3, 20), generator=g),
                     "attention_mask": torch.ones(3, 20).long()}}
    out = []
    for budget in (1, 2):
        torch.set_num_threads(budget)
        module = TranslatorDistillModule(build_grafted(host, donor, 1, 1), host, teacher=tiny_model("gpt_neox", seed=3))
        parts = module.losses(step)
        total = parts["task"] + parts["text"]
        out.append((total.detach(), torch.autograd.grad(total, list(module.translators.parameters()))))
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1], strict=True):
        assert torch.equal(a, b)
