"""GPTQ on SVD factors: against the optimal-brain-surgeon reference, equal to RTN without feedback,
and a lower output error than RTN at the same bits on a calibration batch."""

from __future__ import annotations

import pytest
import torch
import transformers as tr

from grafting.skillpack.calibration import collect_hessians
from grafting.skillpack.compressors import decompress, get_compressor
from grafting.skillpack.gptq import _Grids, _rows_quantizer, gptq, gptq_factors
from grafting.skillpack.quant import dequantize, quantize, quantize_factors


def _grid_rounder(step: float):
    """A fixed uniform grid (no state), so both implementations round the same way."""
    return lambda j, w: torch.round(w[:, j] / step) * step


def _obs_reference(w: torch.Tensor, h: torch.Tensor, quantize_column, damp: float) -> torch.Tensor:
    """Optimal brain surgeon, column by column, with the explicit inverse of the remaining block of H."""
    w = w.double().clone()
    h = h.double().clone()
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    q = torch.zeros_like(w)
    for j in range(w.shape[1]):
        hinv = torch.linalg.inv(h[j:, j:])
        q[:, j] = quantize_column(j, w)
        err = (w[:, j] - q[:, j]) / hinv[0, 0]
        w[:, j:] -= err.unsqueeze(1) * hinv[0].unsqueeze(0)
    return q


def _calibration(n: int, samples: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated inputs (a few strong directions), as real activations are: X (n × samples), H = X Xᵀ / N."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=gen) * torch.logspace(0, -2, n).unsqueeze(0)
    x = mix @ torch.randn(n, samples, generator=gen) + 0.3 * torch.randn(n, 1, generator=gen)
    return x, x @ x.t() / samples


def test_cholesky_loop_equals_the_obs_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 12, generator=gen)
    _, h = _calibration(12)
    rounder = _grid_rounder(0.25)
    got = gptq(w, h, rounder, damp=0.01)
    want = _obs_reference(w, h, rounder, damp=0.01)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    assert not torch.equal(got, torch.round(w.double() / 0.25) * 0.25)  # the feedback changed something


@pytest.mark.parametrize("group_size", [4, None])
def test_without_feedback_gptq_gives_the_rtn_codes(group_size: int | None) -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 10, generator=gen)
    grids = _Grids([4] * 5, 10, group_size, "float16")
    got = gptq(w, torch.eye(10), _rows_quantizer(grids), damp=0.0)
    ref = quantize(w, 4, group_size, "float16")
    torch.testing.assert_close(got.float(), dequantize(ref), rtol=0, atol=0)
    assert torch.equal(grids.scale, ref.scale) and torch.equal(grids.zero, ref.zero)


def test_gptq_factors_share_the_rtn_layout_and_decompress() -> None:
    gen = torch.Generator().manual_seed(2)
    delta = torch.randn(24, 16, generator=gen) @ torch.randn(16, 40, generator=gen) / 10
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    schedule = [[2, 8], [4, 4], [None, 2]]
    _, h = _calibration(40)
    rtn, seg_rtn = quantize_factors(u[:, :10], s[:10], vh[:10], schedule, 8)
    ours, seg = gptq_factors(u[:, :10], s[:10], vh[:10], h, schedule, 8)
    assert seg == seg_rtn and set(ours) == set(rtn)
    assert all(ours[k].shape == rtn[k].shape and ours[k].dtype == rtn[k].dtype for k in rtn)


@pytest.mark.parametrize("schedule", [[[None, 2]], [[None, 4]], [[2, 8], [4, 4], [None, 2]]])
def test_gptq_output_error_is_lower_than_rtn_at_the_same_bits(schedule) -> None:
    gen = torch.Generator().manual_seed(3)
    delta = torch.randn(48, 12, generator=gen) @ torch.randn(12, 64, generator=gen) / 20
    x, h = _calibration(64, seed=4)
    x_test, _ = _calibration(64, seed=4)  # same distribution; the batch the Hessian came from
    params = {"rank": 12, "schedule": schedule, "group_size": 16}
    rtn = get_compressor("svd_quant", {**params, "quantizer": "rtn"}).compress(delta)
    ours = get_compressor("svd_quant", {**params, "quantizer": "gptq"}).compress(delta, hessian=h)
    assert ours.meta["quantizer"] == "gptq" and rtn.meta["quantizer"] == "rtn"
    assert ours.nbytes == rtn.nbytes  # the same bits: only the codes differ

    def out_err(c) -> float:
        return float(((decompress(c) - delta) @ x_test).norm() / (delta @ x_test).norm())

    assert out_err(ours) < 0.9 * out_err(rtn), (out_err(ours), out_err(rtn))


def test_gptq_without_a_hessian_falls_back_to_rtn() -> None:
    delta = torch.randn(8, 8)
    c = get_compressor("svd_quant", {"rank": 4, "quantizer": "gptq"}).compress(delta)
    r = get_compressor("svd_quant", {"rank": 4}).compress(delta)
    assert c.meta["quantizer"] == "rtn" and all(torch.equal(c.tensors[k], r.tensors[k]) for k in r.tensors)


def test_collect_hessians_is_the_mean_outer_product_of_layer_inputs() -> None:
    torch.manual_seed(0)
    model = tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=64)).eval()
    ids = torch.randint(0, 64, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    name = "gpt_neox.layers.0.mlp.dense_4h_to_h.weight"
    seen = {}
    handle = model.gpt_neox.layers[0].mlp.dense_4h_to_h.register_forward_pre_hook(
        lambda m, a: seen.setdefault("x", a[0].detach()))
    hessians = collect_hessians(model, [{"input_ids": ids, "attention_mask": mask}], names={name})
    handle.remove()
    x = seen["x"].reshape(-1, 64)[mask.reshape(-1).bool()].double()
    torch.testing.assert_close(hessians[name], (x.t() @ x / 8).float())
    assert set(hessians) == {name}
