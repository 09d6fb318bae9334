"""evaluate.py's job (not a train stage): re-evaluate a finished run from its saved artifacts, or any saved model."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from grafting.artifacts import RESULTS, write_json_atomic, write_text_atomic
from grafting.console import quiet_libraries
from grafting.errors import ConfigError
from grafting.evaluation.tables import pipeline_markdown
from grafting.graft.grafted import build_grafted, load_graft_
from grafting.graft.tuned_block import load_tuned_block, with_block
from grafting.models.loading import load_model
from grafting.plain import plain
from grafting.pretraining import ensure_pretrained
from grafting.provenance import provenance
from grafting.schema import validate_config
from grafting.stages.common import evaluate

log = logging.getLogger(__name__)


def _saved_config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError("run_dir", f"{run_dir} has no .hydra/config.yaml: not a train.py run directory.")
    return OmegaConf.load(path)


def _load(spec, key: str, cache_dir):
    """``load_model``, pretraining a missing tiny preset first (another cache folder than the run's)."""
    if spec.get("source") == "tiny_pretrained":
        ensure_pretrained(plain(spec), cache_dir)
    return load_model(spec, key, cache_dir)


def rebuild_pipeline_models(run_cfg: DictConfig, run_dir: Path, cache_dir: str) -> tuple[dict[str, Any], Any, Any]:
    """Tuned, Grafted, Vanilla and Host models of a pipeline run, from its config and saved files."""
    donor, tokenizer = _load(run_cfg.donor, "donor", cache_dir)
    host, _ = _load(run_cfg.host, "host", cache_dir)
    layer, dest = int(run_cfg.graft.layer), int(run_cfg.graft.dest)
    tuned = with_block(donor, layer, load_tuned_block(run_dir / "tuned_block", donor, layer))
    grafted = build_grafted(host, donor, layer, dest, run_cfg.graft.translator, span=int(run_cfg.graft.get("span", 1)))
    load_graft_(grafted, run_dir / "graft")
    return {"Tuned": tuned, "Grafted": grafted, "Vanilla": donor, "Host": host}, tokenizer, host


def _max_difference(a: dict, b: dict) -> float:
    diffs = [abs(a[m][k] - b[m][k]) for m in a for k in a[m]
             if isinstance(a[m][k], float) and isinstance(b.get(m, {}).get(k), float)
             and not (math.isnan(a[m][k]) or math.isnan(b[m][k]))]
    return max(diffs, default=0.0)


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def apply_evaluation_overrides(run_cfg: DictConfig, cfg: DictConfig, overrides: list[str]) -> dict[str, dict]:
    """Set in ``run_cfg`` every ``evaluation.*`` key given on the command line (its value in ``cfg``).

    Returns ``{key: {"run": the run's value, "now": the value used}}`` for those that differ from the run's.
    """
    changed = {}
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+")
        if "=" not in item or not (key == "evaluation" or key.startswith("evaluation.")):
            continue
        old, new = plain(OmegaConf.select(run_cfg, key, default=None)), OmegaConf.select(cfg, key, default=None)
        with open_dict(run_cfg):
            OmegaConf.update(run_cfg, key, new, merge=False, force_add=True)
        if plain(new) != old:
            changed[key] = {"run": old, "now": plain(new)}
    return changed


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Aggregate a sweep, re-evaluate a run (with the ``evaluation.*`` settings of the command line, or of
    ``overrides``) or evaluate a saved model. Everything is written to this job's own output folder."""
    validate_config(cfg)  # every key, before any model is loaded
    quiet_libraries()
    import grafting.graft.hf  # noqa: F401  (model=<folder> may hold a saved graft)
    out_dir = Path(cfg.paths.output_dir)
    if cfg.get("aggregate"):
        from grafting.reporting.aggregate import aggregate

        sweep = Path(cfg.aggregate)
        if not sweep.is_dir():
            raise ConfigError("aggregate", f"{sweep} is not a folder (give a multirun directory).")
        report = aggregate(sweep, cfg.get("aggregate_out") or out_dir, model=cfg.get("aggregate_model"),
                           allow_mixed=bool(cfg.get("allow_mixed", False)))
        print(report["table"])
        print(f"wrote {report['files']} and {len(report['figures'])} figure(s)")
        return report
    changed: dict[str, dict] = {}
    if cfg.get("run_dir"):
        run_dir = Path(cfg.run_dir)
        if out_dir.resolve() == run_dir.resolve():
            raise ConfigError("hydra.run.dir", f"{out_dir} is the run being evaluated: evaluate.py never writes there.")
        run_cfg = _saved_config(run_dir)
        with open_dict(run_cfg):
            run_cfg.paths = cfg.paths
        given = _command_line_overrides() if overrides is None else overrides
        changed = apply_evaluation_overrides(run_cfg, cfg, given)
        ignored = [o for o in given if not o.lstrip("+~").startswith(("evaluation", "paths.", "hydra", "run_dir="))]
        if ignored:
            print(f"not applied to the re-evaluation of a run (its own config is used): {', '.join(ignored)}")
        if changed:
            print(f"evaluation settings that differ from the run's ({run_dir}): "
                  + ", ".join(f"{k}: {v['run']} -> {v['now']}" for k, v in changed.items()))
        else:
            log.info("evaluating with the run's own evaluation settings")
        models, tokenizer, host = rebuild_pipeline_models(run_cfg, run_dir, cfg.paths.cache_dir)
        scores = evaluate(run_cfg, models, tokenizer, host=host)
        evaluation = run_cfg.evaluation
    elif cfg.get("model_dir"):
        path = Path(cfg.model_dir)
        model, tokenizer = load_model({"source": "local", "path": str(path)}, "model")
        host, _ = _load(cfg.host, "host", cfg.paths.cache_dir)
        scores = evaluate(cfg, {path.name: model, "Host": host}, tokenizer, host=host)
        run_dir, evaluation = None, cfg.evaluation
    else:
        raise ConfigError("run_dir", "give run_dir=<a train.py run directory> or model=<a saved model folder>.")
    markdown = pipeline_markdown(scores)
    print(markdown)
    result: dict[str, Any] = {"models": scores, "evaluation": plain(evaluation), "settings_changed": changed,
                              "provenance": provenance()}
    if run_dir is not None and (run_dir / RESULTS).is_file():
        saved = json.loads((run_dir / RESULTS).read_text())["models"]
        result["max_abs_difference_vs_saved"] = _max_difference(scores, saved)
        print(f"max |difference| against {run_dir / RESULTS}: {result['max_abs_difference_vs_saved']:.3g}"
              + (" (other evaluation settings)" if changed else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "evaluation.json", result)
    write_text_atomic(out_dir / "evaluation.md", markdown)
    print(f"wrote {out_dir / 'evaluation.json'}")
    return result
