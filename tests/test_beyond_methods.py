"""Beyond-the-paper alignment methods: the distillation phase and the equal-parameter host LoRA control."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from grafting.graft.finetuning import lora_rank_for
from grafting.graft.grafted import build_grafted, graft_of
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.modules.translator_distill import TranslatorDistillModule, answer_kl


def _task_batch(batch):
    labels = batch["input_ids"].clone()
    labels[:, :4] = -100  # the "prompt"
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


def test_answer_kl_is_the_kl_on_the_positions_that_predict_answer_tokens():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 3, 4]])
    rows = [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]  # position t predicts labels[t + 1]
    ref = torch.stack([F.kl_div(F.log_softmax(student[b, t], -1), F.log_softmax(teacher[b, t], -1),
                                log_target=True, reduction="sum") for b, t in rows]).mean()
    torch.testing.assert_close(answer_kl(student, teacher, labels), ref)


def test_distillation_is_zero_at_the_identity_and_moves_only_the_translators(batch):
    host = tiny_model("gpt_neox", seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1)
    task = _task_batch(batch)
    module = TranslatorDistillModule(grafted, host, teacher=host)
    parts = module.losses({"task": task, "text": batch})
    assert parts["task"].item() < 1e-10 and parts["text"].item() < 1e-10

    teacher = tiny_model("gpt_neox", seed=3)  # another model's answers: the translators have to move
    module = TranslatorDistillModule(grafted, host, teacher=teacher, lr=1e-2)
    frozen = {k: v.clone() for k, v in grafted.state_dict().items() if "translator" not in k}
    opt = module.configure_optimizers()
    first = None
    for _ in range(15):
        loss = sum(module.losses({"task": task, "text": batch}).values())
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert sum(module.losses({"task": task, "text": batch}).values()).item() < first
    for k, v in grafted.state_dict().items():
        if "translator" not in k:
            assert torch.equal(v, frozen[k]), k
    assert not torch.equal(graft_of(grafted)[1].post_translator.weight, torch.eye(64))


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_host_lora_rank_matches_the_translator_budget(family):
    host = tiny_model(family, seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1)
    _, graft = graft_of(grafted)
    budget = sum(p.numel() for t in (graft.pre_translator, graft.post_translator) for p in t.parameters())
    rank = lora_rank_for(host, 1, budget)
    trained = sum(p.numel() for p in LayerFinetuneModule(host, 1, "lora", lora_r=rank).model.parameters()
                  if p.requires_grad)
    per_rank = trained / rank
    assert abs(trained - budget) <= per_rank / 2  # the closest rank


@pytest.mark.slow  # a smoke job each, in this process; CI runs them in its slow step
@pytest.mark.parametrize("overrides", [
    ["align.method=distill"],
    ["align.solver=procrustes"],
    ["+variant=procrustes_init"],
    ["graft.layer=0", "graft.dest=0", "graft.span=2"],
    ["evaluation.host_lora=true", "evaluation.controls=false"],
], ids=["distill", "procrustes", "procrustes_init", "span", "host_lora"])
def test_method_runs_from_the_cli(tmp_path, overrides):
    """Each method is an option of the main job (2-layer random models, a few steps)."""
    from conftest import run_job
    from test_cli import _results

    results = _results(run_job(["debug=smoke", *overrides], tmp_path))
    models = results["models"]
    assert {"Grafted", "Host"} <= set(models) and all("f_S" in s for s in models.values())
    if "align.method=distill" in overrides:
        assert {"distill", "distill_vanilla"} <= set(results["align"])
        assert results["align"]["distill"]["task_kl_after"] < results["align"]["distill"]["task_kl_before"]
    if "+variant=procrustes_init" in overrides:
        assert results["config"]["align"]["init"] == "procrustes"
    if "graft.span=2" in overrides:
        assert results["config"]["graft"]["span"] == 2
    if "evaluation.host_lora=true" in overrides:
        assert "HostLoRA" in models and "VanillaGraft" not in models


@pytest.mark.parametrize(("variant", "expected"), [
    ("distill", {"align.method": "distill", "align.distill.steps": 100}),
    ("distill_long", {"align.method": "distill", "align.distill.steps": 400}),
    ("procrustes_init", {"align.init": "procrustes", "align.solver": "adam"}),
    ("procrustes_distill", {"align.init": "procrustes", "align.solver": "adam", "align.method": "distill"}),
    ("procrustes", {"align.solver": "procrustes", "align.method": "paper"}),
    ("lstsq", {"align.solver": "lstsq", "align.method": "paper"}),
    ("span2", {"graft.span": 2}),
    ("host_lora", {"evaluation.host_lora": True}),
])
def test_each_beyond_variant_sets_its_method(tmp_path, variant, expected):
    """``+variant=<name>`` of the beyond sweeps composes to the alignment options its table row names."""
    from conftest import compose_config
    from omegaconf import OmegaConf

    cfg = compose_config(["experiment=beyond_knowledge_tiny", f"+variant={variant}"], tmp_path)
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_distillation_fast_losses_are_the_plain_ones(family, batch):
    """Answer-position unembedding, the chunked text KL and the shared host prefix give the losses and the
    translator gradients of the plain path (four full forwards, logits everywhere)."""
    host, donor = tiny_model(family, seed=0), tiny_model(family, seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    with torch.no_grad():  # translators away from the identity, so every term is non-trivial
        for p in graft_of(grafted)[1].pre_translator.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    module = TranslatorDistillModule(grafted, host, teacher=tiny_model(family, seed=3))
    assert module.fast
    steps = {"task": _task_batch(batch), "text": batch}
    params = list(module.translators.parameters())
    fast = module.losses(steps)
    plain = module.plain_losses(steps)
    for name in ("task", "text"):
        torch.testing.assert_close(fast[name], plain[name])
        for a, b in zip(torch.autograd.grad(fast[name], params, retain_graph=True),
                        torch.autograd.grad(plain[name], params, retain_graph=True), strict=True):
            torch.testing.assert_close(a, b)
