"""Logit-lens reading and the closed-form (least-squares) translators, against reference computations."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.graft.grafted import build_grafted
from grafting.graft.losses import kl
from grafting.graft.translators import build_translator, least_squares_map, procrustes_map
from grafting.modules.translator_align import TranslatorAlignModule


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


@pytest.mark.parametrize("d_in,d_out", [(8, 8), (6, 10), (10, 6)])
def test_procrustes_recovers_a_scaled_rotation_and_shift(d_in, d_out):
    """y = s Q x + t with Q (semi-)orthogonal: the closed form gives back s Q and t."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(max(d_in, d_out), max(d_in, d_out), generator=g, dtype=torch.float64))
    q = q[:d_out, :d_in]  # orthonormal rows (narrowing) or columns (widening)
    weight, bias = (1.7 * q).float(), torch.randn(d_out, generator=g)
    # whitened inputs (centred, X^T X = I): a narrowing map is then recoverable exactly
    a = torch.randn(300, d_in, generator=g, dtype=torch.float64)
    x = (torch.linalg.qr(a - a.mean(0))[0] * 10 + torch.randn(d_in, generator=g, dtype=torch.float64)).float()
    w_hat, b_hat = procrustes_map(x, x @ weight.T + bias)
    torch.testing.assert_close(w_hat, weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b_hat, bias, atol=1e-4, rtol=1e-4)


def test_procrustes_is_the_best_rotation_not_the_best_map():
    """On a map that shears, Procrustes keeps lengths (singular values all equal s) and its MSE is between
    least squares (the optimum) and the identity; a brute-force check over random rotations never beats it."""
    g = torch.Generator().manual_seed(1)
    d = 5
    x = torch.randn(400, d, generator=g)
    shear = torch.eye(d) + 0.8 * torch.triu(torch.randn(d, d, generator=g), 1)
    y = x @ shear.T
    w, b = procrustes_map(x, y)
    sv = torch.linalg.svdvals(w)
    torch.testing.assert_close(sv, sv[0].expand_as(sv), atol=1e-4, rtol=1e-4)

    def err(weight, bias):
        return (x @ weight.T + bias - y).pow(2).sum().item()

    w_ls, b_ls = least_squares_map(x, y)
    assert err(w_ls, b_ls) <= err(w, b) <= err(torch.eye(d), torch.zeros(d))
    for _ in range(200):
        rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        s = ((x @ rot.T) * y).sum() / (x @ rot.T).pow(2).sum()  # best scale for that rotation
        assert err(w, b) <= err(s * rot, y.mean(0) - s * rot @ x.mean(0)) + 1e-3


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


@pytest.mark.parametrize("init", ["lstsq", "procrustes"])
def test_adam_starts_from_the_closed_form_named_by_init(init):
    """align.init=<closed form>: before any step, each translator is that closed form on the fit batches."""
    from types import SimpleNamespace

    from grafting.graft.alignment import AlignConfig, align_graft
    from grafting.graft.block import graft_of
    from grafting.graft.translators import CLOSED_FORMS

    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    batches = _batches(3)
    data = SimpleNamespace(train_dataloader=lambda: iter(batches), val_dataloader=lambda: iter(batches[:1]))
    grafted = build_grafted(host, donor, layer=1, dest=1)
    config = AlignConfig(init=init, lstsq_batches=3, distance="mse", reading="hidden")
    align_graft(grafted, host, donor, data, config, fit=lambda *args, **kwargs: None)  # no gradient steps
    graft = graft_of(grafted)[1]
    reference = build_grafted(host, donor, layer=1, dest=1)  # Pre-T fitted first, then Post-T after it
    for phase, name in (("pre", "pre_translator"), ("post", "post_translator")):
        module = TranslatorAlignModule(reference, host, donor, 1, phase, "residual", "mse", reading="hidden")
        weight, bias = CLOSED_FORMS[init](*module.captured(batches))
        module.translator.set_map_(weight, bias)
        x = torch.randn(5, surgery.hidden_size(donor))
        torch.testing.assert_close(getattr(graft, name)(x), module.translator(x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(graft.pre_translator(x), x)  # it did move from the identity
