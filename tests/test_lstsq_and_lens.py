"""Logit-lens reading and the closed-form (least-squares) translators, against reference computations."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.grafted import build_grafted
from grafting.losses import kl
from grafting.modules.translator_align import TranslatorAlignModule
from grafting.translators import build_translator, least_squares_map


def _batches(n: int, vocab: int = 512, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": (ids := torch.randint(0, vocab, (4, 16), generator=g)),
             "attention_mask": torch.ones_like(ids)} for _ in range(n)]


def test_logit_lens_of_the_last_residual_is_the_models_logits(family, batch):
    model = tiny_model(family)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    last = surgery.residual_before(model, ids, surgery.num_blocks(model), mask)
    torch.testing.assert_close(surgery.logit_lens(model, last),
                               model(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)


def test_logit_lens_loss_is_the_kl_of_the_decoded_streams():
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    module = TranslatorAlignModule(grafted, host, donor, 1, "pre", "residual", "kl", reading="logit_lens")
    batch = _batches(1)[0]
    host_in = surgery.residual_before(host, batch["input_ids"], 1, batch["attention_mask"])
    donor_in = surgery.residual_before(donor, batch["input_ids"], 1, batch["attention_mask"])
    expected = kl(surgery.logit_lens(donor, host_in), surgery.logit_lens(donor, donor_in), batch["attention_mask"])
    torch.testing.assert_close(module.loss(batch), expected)
    hidden = TranslatorAlignModule(grafted, host, donor, 1, "pre", "residual", "kl", reading="hidden").loss(batch)
    assert not torch.allclose(hidden, expected)


@pytest.mark.parametrize("kind", ["linear", "affine"])
@pytest.mark.parametrize("d_in,d_out", [(8, 8), (6, 10), (10, 6)])
def test_least_squares_recovers_an_affine_map(kind, d_in, d_out):
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(d_out, d_in, generator=g), torch.randn(d_out, generator=g)
    x = torch.randn(200, d_in, generator=g)
    w_hat, b_hat = least_squares_map(x, x @ weight.T + bias)
    torch.testing.assert_close(w_hat, weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b_hat, bias, atol=1e-4, rtol=1e-4)
    translator = build_translator(kind, d_in, d_out)
    translator.set_map_(w_hat, b_hat)
    torch.testing.assert_close(translator(x), x @ weight.T + bias, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_closed_form_translator_beats_gradient_steps_on_its_own_data(phase):
    """The least-squares translator is the MSE optimum: no Adam run on the same residuals does better."""
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    batches = _batches(6)
    losses = {}
    for solver in ("adam", "lstsq"):
        grafted = build_grafted(host, donor, layer=1, dest=1)
        module = TranslatorAlignModule(grafted, host, donor, 1, phase, "residual", "mse", lr=1e-2)
        if solver == "lstsq":
            module.fit_least_squares_(batches)
        else:
            opt = module.configure_optimizers()
            for _ in range(20):
                for b in batches:
                    module.loss(b).backward()
                    opt.step()
                    opt.zero_grad()
        with torch.no_grad():
            losses[solver] = sum(module.loss(b).item() for b in batches) / len(batches)
    assert losses["lstsq"] <= losses["adam"] * (1 + 1e-4)
    assert losses["lstsq"] < TranslatorAlignModule(build_grafted(host, donor, 1, 1), host, donor, 1, phase,
                                                   "residual", "mse").loss(batches[0]).item()
