"""Stage ``skillpack`` end to end as a user runs it (debug=smoke), and its config checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import compose_config, run_job

from grafting.errors import ConfigError
from grafting.models.loading import load_model
from grafting.skillpack.pack import model_fingerprint
from grafting.stages.skillpack_common import check_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a whole stage at smoke size (about 30 s); CI runs it with the others
def test_skillpack_stage_smoke(tmp_path, capsys):
    run_dir = run_job(["stage=skillpack", "debug=smoke", "skill.fuse=[copy]", "skillpack.budget.fractions=[0.02,0.05]",
                       "skillpack.budget.bitdelta_steps=5", "skillpack.lora.lrs=[1e-3,1e-2]", "skill.n_val=8",
                       "skillpack.router=[learned,centroid,arrow,gate,tokens]"], tmp_path)
    stdout = capsys.readouterr().out
    assert "Storage vs quality" in stdout and "router: arrow" in stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["storage"]) == {"modadd", "copy"}
    methods = {r["method"].split(" ")[0]: r for r in results["storage"]["modadd"]}
    assert set(methods) == {"graftllm", "graftllm_small", "graftllm_maghead", "dense", "magnitude", "svd",
                            "svd_quant", "bitdelta", "dare"}  # with budgets on, LoRA is on the curves
    assert methods["dense"]["pct_dense"] == 100.0 and methods["graftllm"]["pct_dense"] < 20
    # every pack is on disk and bound to the fingerprint of the base target (host=tiny-random, rebuilt here)
    cfg = compose_config(["stage=skillpack", "debug=smoke"], tmp_path)
    fingerprint = model_fingerprint(load_model(cfg.host, "host", cfg.paths.cache_dir)[0])
    assert results["base_fingerprint"] == fingerprint
    for task, method in [("modadd", "graftllm"), ("modadd", "lora@5pct"), ("modadd", "dense"),
                         ("copy", "graftllm")]:
        manifest = json.loads((run_dir / "packs" / task / method / "manifest.json").read_text())
        assert manifest["base_fingerprint"] == fingerprint and manifest["metadata"]["task"] == task
    for kind in ("learned", "centroid", "arrow", "gate", "tokens"):  # every router runs from the config, each its row
        assert set(results["fusion"]["scores"][f"router: {kind}"]) == {"modadd", "copy"}
        assert set(results["fusion"]["routers"][kind]["paraphrase_accuracy"]) == {"modadd", "copy"}
    assert results["fusion"]["routers"]["arrow"]["train"]["modules"] > 0  # prototypes from the packs alone
    chosen = results["fusion"]["routers"]["gate"]["temperature_chosen_on_val"]  # the gate's T, on validation
    assert [t for t, _ in chosen["grid"]] == [1.0, 10.0, 100.0, 1000.0]
    assert chosen["temperature"] == max(chosen["grid"], key=lambda g: g[1])[0]
    assert "temperature_chosen_on_val" not in results["fusion"]["routers"]["learned"]
    assert set(results["fusion"]["scores"]["emr (task id)"]) == {"modadd", "copy"}  # EMR-merging, by task id
    assert (run_dir / "router" / "router.json").is_file() and (run_dir / "router" / "router.safetensors").is_file()
    assert (run_dir / "router_gate" / "router.json").is_file()
    assert (run_dir / "storage_vs_quality.png").stat().st_size > 1000
    assert len(json.loads((run_dir / "distilled" / "copy.json").read_text())["responses"]) == 32
    assert "Storage vs quality" in (run_dir / "results.md").read_text()
    # equal budgets: every method at both budgets, each pack within its budget, saved and bound to the base
    budgets = results["budgets"]["modadd"]
    assert {(r["method"], r["budget"]) for r in budgets} == {
        (m, b) for m in ("svd", "svd_quant", "graftllm", "graftllm_gptq", "magnitude", "dare", "bitdelta", "lora")
        for b in (0.02, 0.05)}
    for r in budgets:
        assert r["bytes"] is None or r["pct_dense"] <= 100 * r["budget"], r
    gptq = json.loads((run_dir / "packs" / "modadd" / "graftllm_gptq@5pct" / "manifest.json").read_text())
    assert "gptq" in {m.get("quantizer") for m in gptq["modules"].values()}
    bitdelta = json.loads((run_dir / "packs" / "modadd" / "bitdelta@5pct" / "manifest.json").read_text())
    assert all(m.get("distilled") for m in bitdelta["modules"].values() if m["method"] == "bitdelta")
    assert set(results["fusion"]["router_paraphrase_accuracy"]) == {"modadd", "copy"}
    assert set(results["fusion"]["mergers_chosen_on_val"]["ties"]["params"]) == {"density", "lam"}
    assert (run_dir / "budget_curves.png").stat().st_size > 1000

    # docs/skillpacks/route_runs.py builds the fusion table from what the run saved
    sys.path.insert(0, str(ROOT / "docs" / "skillpacks"))
    try:
        import route_runs
    finally:
        sys.path.pop(0)
    routed = route_runs.route_run(run_dir, ["learned", "gate"], [1.0, 10.0])
    assert set(routed["routers"]) == {"learned", "gate", "learned + paraphrases", "gate + paraphrases"}
    assert routed["routers"]["gate"]["fit"]["temperature_chosen_on_val"]["temperature"] in (1.0, 10.0)
    assert list(routed["rows"]) == ["emr (task id)", *route_runs.RUN_ROWS]
    assert routed["rows"]["ties"]["score"] == results["fusion"]["scores"]["ties"]  # the run's own, chosen on val
    table = route_runs.markdown([routed], tmp_path)
    assert "| emr (task id) | — | — |" in table and "| base (no pack) |" in table


@pytest.mark.slow  # five skills' stage at smoke size (about 40 s)
def test_skillpack_content_smoke(tmp_path):
    """experiment=skillpack_content: every fusion row in the paraphrase and content-only wordings, and the
    mixed stream, whose per-prompt routing is the same as routing each task's prompts on their own."""
    run_dir = run_job(["experiment=skillpack_content", "debug=smoke", "skill.fuse=[copy_p,rotate_p]",
                       "skillpack.router=[learned,arrow]"], tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    fusion, names = results["fusion"], ["reverse_p", "copy_p", "rotate_p"]
    assert set(fusion["by_wording"]) == {"paraphrase", "content"}
    for res in fusion["by_wording"].values():
        assert set(res["scores"]) == set(fusion["scores"]) - {"full fine-tune (one model per task)"}
        assert all(set(row) == set(names) for row in res["scores"].values())
        assert set(res["routed_to_own"]) == {"learned", "arrow"}
    mixed = fusion["mixed_stream"]
    assert mixed["n_prompts"] == 3 * int(compose_config(["experiment=skillpack_content", "debug=smoke"],
                                                        tmp_path).skill.n_test)
    for kind, per_task in mixed["routers"].items():
        assert {n: r["routed_to_own"] for n, r in per_task.items()} == fusion["routers"][kind]["test_accuracy"]
    assert "asked as content" in (run_dir / "results.md").read_text()
    # docs/skillpacks/make_content.py builds the page's tables from what the run saved
    sys.path.insert(0, str(ROOT / "docs" / "skillpacks"))
    try:
        import make_content
    finally:
        sys.path.pop(0)
    table = make_content.markdown(make_content.load_runs(tmp_path), tmp_path, tmp_path / "routing.png")
    for wording in ("template", "paraphrase", "content"):
        assert f"**Asked as {wording}.**" in table
    assert table.count("| router: ") == 3 * 2 and "| arrow | " in table and "One mixed stream" in table
    assert (tmp_path / "routing.png").stat().st_size > 1000


@pytest.mark.parametrize("override,key", [
    ("skillpack.methods.graftllm.attention.method=nope", "skillpack.methods.graftllm"),
    ("skillpack.methods.svd.mlp.rank=-1", "skillpack.methods.svd"),
    ("skillpack.default=zip", "skillpack.default"),
    ("skill.task=sorting", "skill.task"),
    ("skill.tasks.copy.kind=shuffle", "skill.tasks.copy.kind"),
    ("skill.n_train=0", "skill.n_train"),
])
def test_bad_skillpack_config_names_the_key(tmp_path, override, key):
    cfg = compose_config(["stage=skillpack", "debug=smoke", override], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, [str(cfg.skill.task), "copy"])
    assert err.value.key == key


@pytest.mark.parametrize("experiment", ["skillpack_budgets", "skillpack_hetero"])
def test_issue15_experiments_compose_and_validate(tmp_path, experiment):
    from grafting.schema import validate_config

    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    validate_config(cfg)
    assert cfg.stage.name == "skillpack"
    assert {str(cfg.skill.task), *map(str, cfg.skill.fuse)} == {"reverse", "copy", "sort"}
    if experiment == "skillpack_budgets":
        assert list(cfg.skillpack.budget.fractions) == [0.01, 0.02, 0.03, 0.05, 0.10]
    else:  # another family and another tokenizer than the GPTNeoX target
        assert cfg.donor.arch.model_type == "gpt2" and cfg.donor.tokenizer_vocab != cfg.host.get("tokenizer_vocab")
