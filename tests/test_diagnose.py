"""The graft diagnostics: residual deltas, Post-T's image of the donor's direction, logit-lens readings, the stage."""

import copy
import json

import pytest
import torch
from conftest import compose_config, tiny_model

from grafting import surgery
from grafting.errors import ConfigError
from grafting.evaluation.diagnostics import block_residuals, diagnose, half_graft_facts, linear_part
from grafting.graft.grafted import build_grafted, graft_of
from grafting.graft.tuned_block import with_block

LAYER = 1
TOKEN = 7


def _prompts(n: int = 6) -> list[torch.Tensor]:
    """Random token ids of two lengths (so both length groups of block_residuals are exercised)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 512, (5 + 3 * (i % 2),), generator=g) for i in range(n)]


def _perturbed(block: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    new = copy.deepcopy(block)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return new


@torch.no_grad()
def _hidden_last(model, prompts) -> list[torch.Tensor]:
    """Plain forwards, one prompt at a time: output_hidden_states at the last position, (L + 1, d) each."""
    return [torch.stack(model(input_ids=p[None], output_hidden_states=True).hidden_states)[:, 0, -1] for p in prompts]


@torch.no_grad()
def test_identity_graft_of_the_vanilla_block_changes_nothing_and_reads_the_host():
    host = tiny_model("gpt_neox", seed=0)
    prompts = _prompts()
    grafted, vanilla_graft = build_grafted(host, host, LAYER, LAYER), build_grafted(host, host, LAYER, LAYER)
    out = diagnose(host, host, grafted, vanilla_graft, prompts, TOKEN, LAYER)
    n_blocks = surgery.num_blocks(host)
    assert out["graft"]["block"] == list(range(n_blocks)) and len(out["donor"]["delta_rel"]) == n_blocks
    assert out["graft"]["delta_norm"] == [0.0] * n_blocks and out["donor"]["delta_norm"] == [0.0] * n_blocks
    assert out["post_t"]["cos_graft_vs_mapped_donor"] is None  # no direction to compare

    # VanillaGraft's residuals are the host's own: output_hidden_states of a plain forward, prompt by prompt
    residuals = block_residuals(vanilla_graft, prompts)
    for n, hidden in enumerate(_hidden_last(host, prompts)):
        torch.testing.assert_close(residuals[:-1, n], hidden[1:-1])
        # transformers returns the last block's output after the final norm
        torch.testing.assert_close(surgery.final_norm(host)(residuals[-1, n]), hidden[-1])
    logits = torch.stack([host(input_ids=p[None]).logits[0, -1] for p in prompts])
    expected = torch.log_softmax(logits, -1)[:, TOKEN].mean().item()
    assert out["graft"]["lens_logprob"]["VanillaGraft"][-1] == pytest.approx(expected, abs=1e-5)


@torch.no_grad()
def test_donor_delta_matches_two_plain_forwards_and_identity_post_t_gives_cosine_one():
    host = tiny_model("gpt_neox", seed=0)
    tuned_block = _perturbed(surgery.get_blocks(host)[LAYER])
    tuned = with_block(host, LAYER, tuned_block)
    prompts = _prompts()
    grafted = build_grafted(host, host, LAYER, LAYER, block=tuned_block)
    vanilla_graft = build_grafted(host, host, LAYER, LAYER)
    out = diagnose(tuned, host, grafted, vanilla_graft, prompts, TOKEN, LAYER)

    diff = torch.stack([t - v for t, v in zip(_hidden_last(tuned, prompts), _hidden_last(host, prompts),
                                              strict=True)]).mean(0)  # (L + 1, d)
    ref_norm = torch.stack([h for h in _hidden_last(host, prompts)]).norm(dim=-1).mean(0)
    assert out["donor"]["delta_norm"][LAYER - 1] == 0.0  # before block i the two donors agree
    assert out["donor"]["delta_norm"][LAYER] == pytest.approx(diff[LAYER + 1].norm().item(), rel=1e-5)
    assert out["donor"]["delta_norm"][LAYER] > 0
    assert out["donor"]["delta_rel"][LAYER] == pytest.approx((diff[LAYER + 1].norm() / ref_norm[LAYER + 1]).item(),
                                                             rel=1e-5)
    # the logit lens of the last residual is the model's own output
    final = torch.stack([torch.log_softmax(m(input_ids=p[None]).logits[0, -1], -1)[TOKEN]
                         for p in prompts for m in (tuned, host)]).view(-1, 2)
    assert out["donor"]["lens_logprob_diff"][-1] == pytest.approx((final[:, 0] - final[:, 1]).mean().item(), abs=1e-5)

    # donor == host, identity translators: the graft is the tuned donor, its delta the donor's
    assert out["graft"]["delta_norm"] == pytest.approx(out["donor"]["delta_norm"], rel=1e-5, abs=1e-6)
    assert out["post_t"]["cos_graft_vs_mapped_donor"] == pytest.approx(1.0, abs=1e-5)
    assert out["post_t"]["graft_over_mapped_norm"] == pytest.approx(1.0, abs=1e-5)


@torch.no_grad()
def test_post_t_image_is_its_linear_part_bias_excluded():
    host = tiny_model("gpt_neox", seed=0)
    tuned_block = _perturbed(surgery.get_blocks(host)[LAYER])
    tuned = with_block(host, LAYER, tuned_block)
    g = torch.Generator().manual_seed(3)
    d = surgery.hidden_size(host)
    weight, bias = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g), torch.randn(d, generator=g)
    grafted = build_grafted(host, host, LAYER, LAYER, block=tuned_block)
    graft_of(grafted)[1].post_translator.set_map_(weight, bias)
    vanilla_graft = build_grafted(host, host, LAYER, LAYER)
    graft_of(vanilla_graft)[1].post_translator.set_map_(weight, bias)

    delta = torch.randn(d, generator=g)
    torch.testing.assert_close(linear_part(graft_of(grafted)[1].post_translator, delta), weight @ delta)
    out = diagnose(tuned, host, grafted, vanilla_graft, _prompts(), TOKEN, LAYER)
    # Pre-T is the identity, so the graft's delta after Post-T is exactly W Δ_d
    assert out["post_t"]["cos_graft_vs_mapped_donor"] == pytest.approx(1.0, abs=1e-5)
    assert out["post_t"]["graft_over_mapped_norm"] == pytest.approx(1.0, abs=1e-4)
    # ... and a Pre-T that moves the input changes the graft's delta: the cosine drops below 1
    graft_of(grafted)[1].pre_translator.set_map_(weight, bias)
    graft_of(vanilla_graft)[1].pre_translator.set_map_(weight, bias)
    moved = diagnose(tuned, host, grafted, vanilla_graft, _prompts(), TOKEN, LAYER)
    assert moved["post_t"]["cos_graft_vs_mapped_donor"] < 0.999


@torch.no_grad()
def test_each_half_of_the_graft_is_the_graft_with_the_other_translator_the_identity():
    """donor == host: the input half (Pre-T, tuned block, the donor's later blocks) is then the graft with
    Post-T the identity, and the output half the graft with Pre-T the identity. Scored teacher-forced."""
    host = tiny_model("gpt_neox", seed=0)
    tuned_block = _perturbed(surgery.get_blocks(host)[LAYER])
    tuned = with_block(host, LAYER, tuned_block)
    d = surgery.hidden_size(host)
    g = torch.Generator().manual_seed(5)
    pre = (torch.eye(d) + 0.5 * torch.randn(d, d, generator=g), torch.randn(d, generator=g))
    post = (torch.eye(d) + 0.5 * torch.randn(d, d, generator=g), torch.randn(d, generator=g))

    def graft_with(pre_map=None, post_map=None, block=tuned_block):
        model = build_grafted(host, host, LAYER, LAYER, block=block)
        graft = graft_of(model)[1]
        if pre_map is not None:
            graft.pre_translator.set_map_(*pre_map)
        if post_map is not None:
            graft.post_translator.set_map_(*post_map)
        return model

    def predicted(model, ids):  # the token each model puts before the last one, teacher-forced
        return int(model(input_ids=ids[None]).logits[0, -2].argmax())

    input_ref, output_ref = graft_with(pre_map=pre), graft_with(post_map=post)
    sequences = _prompts(8)
    items = [(ids, predicted(input_ref, ids)) for ids in sequences]  # answers: what the input half predicts
    out = half_graft_facts(tuned, graft_with(pre, post), graft_with(pre, post, surgery.get_blocks(host)[LAYER]),
                           items, LAYER)
    assert out["n"] == 8 and out["input_half"] == 1.0
    expected_output = sum(predicted(output_ref, ids) == answer for ids, answer in items) / 8
    assert out["output_half"] == pytest.approx(expected_output)
    assert expected_output < 1.0  # the two halves differ here, so a swap of them would fail
    assert out["Tuned"] == pytest.approx(sum(predicted(tuned, ids) == a for ids, a in items) / 8)


def test_stage_names_run_dir_when_missing_or_not_a_run(tmp_path):
    from grafting.stages.diagnose import run

    with pytest.raises(ConfigError, match=r"stage\.run_dir"):
        run(compose_config(["stage=diagnose", "debug=smoke"], tmp_path))
    (tmp_path / "notarun" / "graft").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"stage\.run_dir.*tuned_block"):
        run(compose_config(["stage=diagnose", "debug=smoke", f"stage.run_dir=[{tmp_path / 'notarun'}]"], tmp_path))
    assert not (tmp_path / "run").exists()  # nothing created before the check


@pytest.mark.slow  # a smoke pipeline run first (~35 s); CI runs it in its slow step
def test_diagnose_stage_on_a_smoke_pipeline_run(tmp_path):
    """The real pipeline at smoke size (2-block random models), then stage=diagnose on its folder, twice side by side."""
    from omegaconf import OmegaConf

    from grafting.stages import run

    pipe = compose_config(["debug=smoke", "finetune.steps=2", "align.steps=2", "evaluation.task_points=4",
                           "evaluation.language.n_texts=2", "evaluation.language.kl_texts=2"], tmp_path / "p")
    run(pipe)
    run_dir = tmp_path / "p" / "run"
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(pipe, run_dir / ".hydra" / "config.yaml")  # what Hydra writes for train.py

    diag = compose_config(["stage=diagnose", "debug=smoke", "stage.n_prompts=8",
                           f"stage.run_dir=[{run_dir},{run_dir}]"], tmp_path / "d")
    results = run(diag)
    out = tmp_path / "d" / "run"
    saved = json.loads((out / "diagnose.json").read_text())
    assert (out / "diagnose.png").stat().st_size > 0
    assert len(saved["runs"]) == 2 and saved["runs"][0]["post_t"] == results["runs"][0]["post_t"]
    entry = saved["runs"][0]
    n_blocks = int(pipe.host.arch.num_hidden_layers)
    assert entry["layer"] == int(pipe.graft.layer) and entry["dest"] == int(pipe.graft.dest)
    assert entry["n_prompts"] == 8 and entry["host"] == pipe.host.name and " The result is 0".startswith(entry["answer_token"])
    for side, models in (("donor", ("Tuned", "Vanilla")), ("graft", ("Grafted", "VanillaGraft"))):
        assert len(entry[side]["delta_rel"]) == n_blocks and len(entry[side]["lens_logprob_diff"]) == n_blocks
        assert set(entry[side]["lens_logprob"]) == set(models)
        assert all(len(v) == n_blocks for v in entry[side]["lens_logprob"].values())
    # the smoke fine-tune moved the block: a nonzero direction after block i, none before
    layer = entry["layer"]
    assert entry["donor"]["delta_norm"][layer] > 0 and entry["graft"]["delta_norm"][entry["dest"]] > 0
    assert all(v == 0.0 for v in entry["donor"]["delta_norm"][:layer])
    facts = entry["facts_teacher_forced"]
    assert facts["n"] == 8 and all(0.0 <= facts[k] <= 1.0 for k in ("Tuned", "Grafted", "input_half", "output_half"))
    assert not list(run_dir.glob("diagnose.*"))  # never written into the pipeline run


def test_run_label_names_the_alignment_options_that_differ_from_the_papers(tmp_path):
    from grafting.stages.diagnose import _alignment_options

    assert _alignment_options(compose_config(["debug=smoke"], tmp_path / "a")) == []
    cfg = compose_config(["debug=smoke", "align.init=procrustes", "graft.span=2"], tmp_path / "b")
    assert _alignment_options(cfg) == ["align.init=procrustes", "graft.span=2"]
