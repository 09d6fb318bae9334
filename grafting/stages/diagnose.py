"""Stage ``diagnose``: where is a graft's skill lost? Reads finished pipeline runs, never writes into them.

For each folder of ``stage.run_dir`` (one, or a list: e.g. a same-width and a wider host side by side) it
rebuilds Tuned, Vanilla, Grafted and VanillaGraft from the run's saved config, ``tuned_block/`` and
``graft/``, and computes :func:`grafting.evaluation.diagnostics.diagnose` on the first ``stage.n_prompts``
test prompts, and :func:`~grafting.evaluation.diagnostics.half_graft_facts` (which half of the graft loses
the facts) on the same items. Writes ``diagnose.json`` and ``diagnose.png`` (one column per run) into this job's folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from grafting import api, surgery
from grafting.artifacts import RESULTS, write_json_atomic
from grafting.data.modular import task_from_config
from grafting.errors import ConfigError
from grafting.evaluation.diagnostics import (
    answer_token_id,
    diagnose,
    fact_items,
    half_graft_facts,
    plot_diagnostics,
    task_prompts,
)
from grafting.graft.grafted import graft_of
from grafting.graft.tuned_block import load_tuned_block, with_block
from grafting.models.loading import load_model
from grafting.plain import plain
from grafting.pretraining import ensure_pretrained
from grafting.run_context import RunContext

#: What a pipeline run folder must hold for the diagnostics.
NEEDED = ("graft", "tuned_block", ".hydra/config.yaml")


def run_dirs(value: Any) -> list[Path]:
    """``stage.run_dir`` (a folder or a list of folders) as paths, each checked to be a pipeline run."""
    value = plain(value)
    if value is None or value == [] or value == "":
        raise ConfigError("stage.run_dir", "give the pipeline run folder(s) to diagnose, e.g. "
                                           "'stage.run_dir=[outputs/pipeline/runs/<time>]'.")
    folders = [Path(str(v)) for v in (value if isinstance(value, list) else [value])]
    for folder in folders:
        missing = [name for name in NEEDED if not (folder / name).exists()]
        if missing:
            raise ConfigError("stage.run_dir", f"{folder} lacks {', '.join(missing)}: not a finished pipeline run "
                                               "(it needs graft/, tuned_block/ and .hydra/config.yaml).")
    return folders


def _load(spec, key: str, cache_dir: str):
    """``load_model``, pretraining a missing tiny preset first (as evaluate.py does)."""
    spec = plain(spec)
    if spec.get("source") == "tiny_pretrained":
        ensure_pretrained(spec, cache_dir)
    return load_model(spec, key, cache_dir)


def _run_config(folder: Path, paths: DictConfig) -> DictConfig:
    """The run's saved config with this job's ``paths`` (its own hold ``${hydra:...}``, unresolvable here)."""
    run_cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    with open_dict(run_cfg):
        run_cfg.paths = paths
    return run_cfg


def _scores(folder: Path) -> dict[str, dict[str, float]]:
    """The run's own task scores (results.json), for the reader beside the diagnostics."""
    path = folder / RESULTS
    if not path.is_file():
        return {}
    models = json.loads(path.read_text()).get("models", {})
    return {name: {k: s[k] for k in ("f_H", "f_S", "fact") if k in s} for name, s in models.items()}


def _alignment_options(run_cfg: DictConfig) -> list[str]:
    """The run's alignment options that differ from the paper's (what tells two runs of one pair apart)."""
    paper = {"align.method": "paper", "align.solver": "adam", "align.init": "identity", "graft.span": 1}
    values = {key: OmegaConf.select(run_cfg, key, default=default) for key, default in paper.items()}
    return [f"{key}={value}" for key, value in values.items() if value != paper[key]]


def diagnose_run(folder: Path, paths: DictConfig, n_prompts: int) -> dict[str, Any]:
    """The diagnostics of one pipeline run folder, with what identifies it (host, donor, i, j, scores)."""
    run_cfg = _run_config(folder, paths)
    cache_dir = str(paths.cache_dir)
    donor, tokenizer = _load(run_cfg.donor, "donor", cache_dir)
    host, _ = _load(run_cfg.host, "host", cache_dir)
    grafted = api.load_graft(host, donor, folder / "graft")  # layer, dest and translator from its manifest
    dest, graft = graft_of(grafted)
    layer = int(graft.layer)
    tuned = with_block(donor, layer, load_tuned_block(folder / "tuned_block", donor, layer))
    vanilla_graft = copy.deepcopy(grafted)
    api.swap_donor_block_(vanilla_graft, surgery.get_blocks(donor)[layer])
    task = task_from_config(plain(run_cfg.task))
    result = diagnose(tuned, donor.eval(), grafted, vanilla_graft, task_prompts(task, tokenizer, n_prompts),
                      answer_token_id(task, tokenizer), layer)
    result["facts_teacher_forced"] = half_graft_facts(tuned, grafted, vanilla_graft,
                                                      fact_items(task, tokenizer, n_prompts), layer)
    host_name, donor_name = str(run_cfg.host.get("name", "host")), str(run_cfg.donor.get("name", "donor"))
    label = (f"host {host_name} (d={surgery.hidden_size(host)}) <- {donor_name} (d={surgery.hidden_size(donor)}), "
             f"i={layer} j={dest}" + "".join(f", {name}" for name in _alignment_options(run_cfg)))
    return {"run_dir": str(folder), "label": label, "host": host_name, "donor": donor_name,
            "host_width": surgery.hidden_size(host), "donor_width": surgery.hidden_size(donor),
            "answer_token": tokenizer.decode([result["answer_token_id"]]), "scores": _scores(folder), **result}


def run(cfg) -> dict[str, Any]:
    folders = run_dirs(cfg.stage.get("run_dir"))  # before anything is created or loaded
    out = Path(cfg.paths.output_dir).resolve()
    for folder in folders:
        if out == folder.resolve() or folder.resolve() in out.parents:
            raise ConfigError("hydra.run.dir", f"{out} is inside the run {folder} being diagnosed: "
                                               "the diagnostics are never written into a pipeline run.")
    ctx = RunContext.from_config(cfg)
    try:
        runs = [diagnose_run(folder, cfg.paths, int(cfg.stage.n_prompts)) for folder in folders]
        for r in runs:
            print(f"{r['label']}: cos(Δg, W_post Δd) = {r['post_t']['cos_graft_vs_mapped_donor']}, "
                  f"lens Δlog p final: donor {r['summary']['donor_lens_logprob_diff_final']:.3f}, "
                  f"graft {r['summary']['graft_lens_logprob_diff_final']:.3f}; teacher-forced fact "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["facts_teacher_forced"].items() if k != "n"))
        results = {"stage": "diagnose", "runs": runs}
        if ctx.is_global_zero:
            write_json_atomic(ctx.run_dir / "diagnose.json", results)
            plot_diagnostics(runs, ctx.run_dir / "diagnose.png")
        ctx.save_results(results)
        return results
    finally:
        ctx.finish()
