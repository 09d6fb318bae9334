"""SkillPacks at real size: bf16 bases, tied weights, offloaded originals, models on the evaluation device."""

from __future__ import annotations

import pytest
import torch
import transformers as tr
from conftest import compose_config

from grafting.skillpack.apply import applied, apply_packs_, unload_
from grafting.skillpack.delta import compute_delta
from grafting.skillpack.pack import load_pack, model_fingerprint, save_pack
from grafting.skillpack.policy import POLICY_KEYS, compress_delta

CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256)
DENSE = dict.fromkeys(POLICY_KEYS, "dense")


def _neox(dtype: torch.dtype) -> tr.GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(**CONFIG)).to(dtype).eval()


def _tuned_fp32(base: torch.nn.Module, scale: float) -> torch.nn.Module:
    """An fp32 copy of ``base`` with a fine-tune-sized change on every weight (as training would give)."""
    tuned = _neox(torch.float32)
    tuned.load_state_dict({k: v.float() for k, v in base.state_dict().items()})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return tuned


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.arange(24).reshape(2, 12)).logits.float()


def test_dense_pack_on_a_bf16_base_reproduces_the_tuned_logits(tmp_path) -> None:
    base = _neox(torch.bfloat16)
    tuned = _tuned_fp32(base, 3e-3)
    delta = compute_delta(base.state_dict(), tuned.state_dict())
    pack = load_pack(save_pack(compress_delta(delta, DENSE), model_fingerprint(base), tmp_path / "dense"))
    reference = _logits(tuned.to(torch.bfloat16))  # the tuned model as a bf16 model holds it
    before = _logits(base)
    with applied(base, pack):
        # every weight is the tuned weight rounded once to bf16: the pack adds nothing of its own
        for name, t in base.state_dict().items():
            assert torch.equal(t, tuned.state_dict()[name].to(torch.bfloat16)), name
        got = _logits(base)
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    fp32 = _logits(_tuned_fp32(base, 3e-3))
    torch.testing.assert_close(got, fp32, rtol=1.6e-2, atol=5e-2)  # bf16 arithmetic vs fp32
    # the delta is not lost in bf16: it moves the logits far more than bf16 arithmetic does
    assert float((got - before).abs().max()) > 4 * float((got - fp32).abs().max())


def _gpt2() -> tr.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = tr.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)
    return tr.GPT2LMHeadModel(cfg).eval()


def test_tied_weights_are_stored_once_and_applied_once(tmp_path) -> None:
    base = _gpt2()
    tuned = _gpt2()
    with torch.no_grad():
        for p in tuned.parameters():  # the tied wte / lm_head tensor is one parameter here
            p.add_(0.01)
    assert tuned.lm_head.weight is tuned.transformer.wte.weight
    delta = compute_delta(base.state_dict(), tuned.state_dict())
    assert ("transformer.wte.weight" in delta) != ("lm_head.weight" in delta)
    path = save_pack(compress_delta(delta, DENSE), model_fingerprint(base), tmp_path / "tied")
    pack = load_pack(path)
    vocab_matrices = [n for n in pack.modules if n in ("transformer.wte.weight", "lm_head.weight")]
    assert len(vocab_matrices) == 1
    with applied(base, pack):
        torch.testing.assert_close(_logits(base), _logits(tuned), rtol=1e-5, atol=1e-5)
        assert base.lm_head.weight is base.transformer.wte.weight


def test_offload_keeps_originals_on_the_cpu_and_restores_exactly() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = _neox(torch.bfloat16).to(device)
    tuned = _tuned_fp32(base.cpu(), 3e-3)
    base.to(device)
    delta = compute_delta({k: v.cpu() for k, v in base.state_dict().items()}, tuned.state_dict())
    snapshot = {k: v.clone() for k, v in base.state_dict().items()}
    saved = apply_packs_(base, compress_delta(delta, DENSE), offload=True)
    assert saved and all(t.device.type == "cpu" for t in saved.values())
    params = dict(base.named_parameters())
    assert all(t.data_ptr() != params[n].data_ptr() for n, t in saved.items() if n in params)
    assert not torch.equal(base.state_dict()["gpt_neox.embed_in.weight"], snapshot["gpt_neox.embed_in.weight"])
    unload_(base, saved)
    for k, v in base.state_dict().items():
        assert v.device.type == device.type and torch.equal(v, snapshot[k]), k


class _Placed(Exception):
    """Raised right after the stage placed its models, to stop before any compute."""


@pytest.mark.parametrize("stage", ["skillpack", "skillpack_continual"])
def test_skill_stages_put_models_on_the_evaluation_device(tmp_path, monkeypatch, stage) -> None:
    # "meta" is a device every machine has: a model moved there keeps no data, so this checks the
    # placement the stage does without a GPU; the stage is stopped at its first use of the weights.
    import importlib

    module = importlib.import_module(f"grafting.stages.{stage}")
    seen: list[torch.device] = []

    def stop(model: torch.nn.Module, *args, **kwargs):
        seen.extend({p.device for p in model.parameters()})
        raise _Placed

    monkeypatch.setattr(module, "model_fingerprint", stop)
    if stage == "skillpack_continual":  # its first use of the weights is inside continual()
        monkeypatch.setattr(module, "continual", lambda ctx, target, tok, source, *a: (stop(source), stop(target)))
    cfg = compose_config([f"stage={stage}", "debug=smoke", "+evaluation.device=meta"], tmp_path)
    with pytest.raises(_Placed):
        module.run(cfg)
    assert seen and {d.type for d in seen} == {"meta"}
