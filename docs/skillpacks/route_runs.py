"""The fusion table: every router of grafting/skillpack/routers, the merges, EMR, the oracle and the base, on
what finished `stage=skillpack` runs saved.

    python docs/skillpacks/route_runs.py outputs/skillpack_budgets [--routers learned centroid arrow gate]

For each run (one per seed): the base target it was built on, its default packs (``packs/<task>/<default>``,
sha256- and fingerprint-checked on load) and its own config. Each router is fitted as the stage fits it (the
training split's prompts; ``arrow`` on the packs alone; the gate's temperature chosen on the validation
split among ``--gate-temperatures``), then scored on the test split: the share of prompts routed to the
task's own pack, in the training template and under a held-out paraphrase, and the task score of routed
generation. Routers that train on prompts are fitted twice: on the template prompts, and on those plus the
training paraphrases. The merges (task arithmetic, TIES, DARE: settings chosen on validation), the full
fine-tunes, the own pack (an oracle router) and the base are the run's own scores (``results.json``);
EMR-merging (no setting to choose) is computed here from the same packs. The table between
``<!-- routers:start -->`` / ``<!-- routers:end -->`` in docs/skillpacks/results.md is replaced; intervals as
everywhere (seeds and test items).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from grafting.data.skill_example import OnSplit
from grafting.evaluation.skill_eval import evaluate_routed, evaluate_skill
from grafting.metrics.stats import INTERVAL_METHOD, format_interval, seed_item_interval
from grafting.models.loading import load_model
from grafting.plain import plain
from grafting.skillpack.merging import emr_task_deltas
from grafting.skillpack.pack import load_pack, model_fingerprint
from grafting.skillpack.routers import ROUTERS, build_router
from grafting.stages.skillpack import dense_pack
from grafting.stages.skillpack_common import check_config, choose_temperature, eval_kwargs, router_prompts

HERE = Path(__file__).resolve().parent


def variants(routers: list[str]) -> list[tuple[str, str, bool]]:
    """``(label, router, paraphrases)``: each router trained on the template prompts, then (if it trains on
    prompts at all) on them plus the training paraphrases."""
    out = [(kind, kind, False) for kind in routers]
    return out + [(f"{kind} + paraphrases", kind, True) for kind in routers if ROUTERS[kind].trains_on_prompts]


#: The run's own fusion rows (results.json), in the table's order after the routers and EMR.
RUN_ROWS = ["task_arithmetic", "ties", "dare", "own pack (oracle)", "full fine-tune (one model per task)",
            "base (no pack)"]


def route_run(run_dir: Path, routers: list[str], temperatures: list[float]) -> dict:
    """``{"routers": {label: {"fit", "template", "paraphrase", "score": {task: value}}}, "rows": {label: {"score"}}}``
    for one finished run: the routers, then EMR and the run's own merges, oracle and base."""
    results = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.create(results["config"])
    names = list(dict.fromkeys([str(cfg.skill.task), *map(str, cfg.skill.fuse or [])]))
    tasks = check_config(cfg, names)
    target, tokenizer = load_model(cfg.host, "host", cfg.paths.cache_dir)
    fingerprint = model_fingerprint(target)
    packs = {n: load_pack(run_dir / "packs" / n / str(cfg.skillpack.default), fingerprint) for n in names}
    rc, ev = cfg.skillpack.fusion.router, eval_kwargs(cfg)
    rc.temperature = temperatures
    val = {n: OnSplit(tasks[n], "val") for n in names}
    val_ev = {**ev, "n_points": int(cfg.skill.n_val)}
    out = {"seed": int(cfg.seed), "n": ev["n_points"], "routers": {}, "rows": {}}
    for label, kind, paraphrases in variants(routers):
        rc.paraphrases = paraphrases
        prompts = router_prompts({n: tasks[n] for n in names}, rc)
        router = build_router(kind, names, **plain(rc))
        fit = router.fit(target, tokenizer, packs, prompts, seed=int(cfg.seed), fingerprint=fingerprint)
        temperature = choose_temperature(router, target, tokenizer, val, packs, rc, val_ev, fingerprint)
        if temperature:
            fit = {**fit, "temperature_chosen_on_val": temperature}
        routed = {n: evaluate_routed(target, tokenizer, tasks[n], router, packs, fingerprint=fingerprint, **ev)
                  for n in names}
        paraphrase = {n: router.choose(target, tokenizer, tasks[n].router_prompts("test")[: ev["n_points"]])
                      for n in names}
        out["routers"][label] = {
            "fit": fit, "template": {n: r["routed_to_own"] for n, r in routed.items()},
            "paraphrase": {n: sum(c == n for c in paraphrase[n]) / max(1, len(paraphrase[n])) for n in names},
            "score": {n: r["score"] for n, r in routed.items()}}
        print(f"{run_dir.name} seed {cfg.seed} {label}: {out['routers'][label]}", flush=True)
    emr = dict(zip(names, emr_task_deltas([packs[n].decompress() for n in names]), strict=True))
    out["rows"]["emr (task id)"] = {"score": {
        n: evaluate_skill(target, tokenizer, tasks[n], packs=dense_pack(emr[n]), fingerprint=fingerprint,
                          **ev)["score"] for n in names}}
    own = results["fusion"]["scores"]
    out["rows"].update({label: {"score": own[label]} for label in RUN_ROWS if label in own})
    print(f"{run_dir.name} seed {cfg.seed} rows: {out['rows']}", flush=True)
    return out


def markdown(runs: list[dict], folder: Path) -> str:
    tasks = list(next(iter(runs[0]["routers"].values()))["template"])
    n = runs[0]["n"]
    seeds = sorted(r["seed"] for r in runs)
    lines = [f"_Generated by `python docs/skillpacks/route_runs.py {folder}` from {len(runs)} runs (seeds {seeds}): "
             "each router fitted on the run's base target and its saved default packs; `+ paraphrases`: trained on the "
             "training split under four other wordings too (`skillpack.fusion.router.paraphrases=true`; never the "
             "held-out wording)._", "",
             f"Cells: mean [95% interval: {INTERVAL_METHOD}; {n} test prompts per task]. Own-pack routing on the "
             "test prompts in their training template / under a held-out paraphrase (routers only); then the task "
             "score on the template prompts: of routed generation, of each merge (TIES, DARE and task arithmetic: "
             "settings chosen on validation by the run; EMR: one shared delta, a mask and a scale per task, applied "
             "by task id), of the task's own pack (an oracle router), of one full fine-tune per task, of the base.",
             "",
             "| router | " + " | ".join(f"{t}: routed to own (template / paraphrase)" for t in tasks)
             + " | " + " | ".join(f"{t}: score" for t in tasks) + " |",
             "|---|" + "---|" * (2 * len(tasks))]
    for kind in runs[0]["routers"]:
        def cell(key: str, t: str, kind: str = kind) -> str:
            return format_interval(seed_item_interval([r["routers"][kind][key][t] for r in runs], n, proportion=True))

        lines.append(f"| {kind} | " + " | ".join(f"{cell('template', t)} / {cell('paraphrase', t)}" for t in tasks)
                     + " | " + " | ".join(cell("score", t) for t in tasks) + " |")
    for label in runs[0].get("rows", {}):
        def score(t: str, label: str = label) -> str:
            return format_interval(seed_item_interval([r["rows"][label]["score"][t] for r in runs], n,
                                                      proportion=True))

        lines.append(f"| {label} | " + " | ".join("—" for _ in tasks) + " | " + " | ".join(map(score, tasks)) + " |")
    chosen = [r["routers"]["gate"]["fit"].get("temperature_chosen_on_val", {}).get("temperature")
              for r in runs if "gate" in r["routers"]]
    if any(t is not None for t in chosen):
        lines += ["", f"The gate's temperature chosen on validation, per seed: {chosen}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder with finished stage=skillpack runs that fused several packs")
    parser.add_argument("--routers", nargs="+", default=sorted(ROUTERS), choices=sorted(ROUTERS))
    parser.add_argument("--gate-temperatures", nargs="+", type=float, default=[1.0, 10.0, 100.0, 1000.0],
                        help="the gate's temperatures, one chosen per run on validation")
    parser.add_argument("--page", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    run_dirs = sorted(p.parent for p in args.runs.rglob("results.json") if (p.parent / "packs").is_dir())
    if not run_dirs:
        raise SystemExit(f"no finished skillpack run with packs under {args.runs}")
    runs = [route_run(d, args.routers, args.gate_temperatures) for d in run_dirs]
    (args.runs / "routers.json").write_text(json.dumps(runs, indent=1))
    from make_results import replace_block  # the same block replacement as the budget tables

    text = replace_block(args.page.read_text(), "routers", markdown(runs, args.runs), args.page)
    args.page.write_text(text)
    print(f"wrote {args.page} from {len(runs)} runs")


if __name__ == "__main__":
    main()
