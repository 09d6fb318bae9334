"""The transplant models: a tiny Llama-style predecessor, its successor and its instruct version.

All share one architecture (default: 10 blocks x 7 linears = 70 transplant candidates) and one
initialisation, and learn a table of arbitrary facts (:class:`grafting.data.key_facts.KeyFacts`, the
evaluation task). Each is built in phases, each phase a cached model of its own:

- **pretrained**: the built-in corpus mixed with the first ``known_fraction`` of the facts.
- **predecessor** (the target) = pretrained + SFT on those known facts (loss on the answers).
  It knows that share of the table and guesses the rest.
- **continued** = pretrained trained longer on the corpus mixed with every fact.
- **successor** (source of the "generation" pair) = continued + SFT on every fact: trained longer, on
  more data than the predecessor, as a newer generation sharing the architecture and initialisation.
- **instruct** (source of the base/instruct pair) = the predecessor (the base) after instruction-style
  SFT on a mix of tasks: every fact, word reversal and word copying (loss on the answers).

A fact inside the token-averaged loss of the mixture carries little weight (5 answer tokens in a batch
of 128-token chunks): 400 mixture steps taught the answer format but few facts, hence the SFT phases.
Each phase is cached under ``<cache>/transplant_models/<role>-<key>``, the key hashing the recipe fields
the phase depends on and the corpus, like :mod:`grafting.models.pretrained_tiny`.

The stage's three models of the default recipe are **shipped** with the package
(``grafting/assets/tiny-transplant-<role>``, see :mod:`grafting.models.shipped`): :func:`load_role` uses the
shipped copy (every sha256 checked) when its manifest's recipe equals :func:`role_recipe`, so the default
``stage=transplant`` trains nothing. ``python -m grafting.pretraining.transplant_pair --ship`` regenerates them
(trains what the cache lacks, then copies the cached phases into the package).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from grafting import cache
from grafting.cache import save_trained_model
from grafting.data.corpus import builtin_documents, builtin_fingerprint
from grafting.data.datamodule import GraftingDataModule, split_texts
from grafting.data.datasets import TaskSFTDataset, TextChunkDataset
from grafting.data.key_facts import KeyFacts
from grafting.data.modular import ModExample
from grafting.data.words import WordOrderSkill
from grafting.models import shipped
from grafting.models.loading import build_random
from grafting.models.tokenizer import builtin_tokenizer
from grafting.modules.causal_lm import CausalLMModule
from grafting.paths import default_cache_dir

log = logging.getLogger(__name__)
ROLES = ("pretrained", "continued", "predecessor", "successor", "instruct")
# Bump when the training code changes what a recipe produces, so stale caches are not reused.
VERSION = 2
# Each phase: the model it starts from and the recipe fields it adds.
PHASES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "pretrained": (None, ("arch", "task", "known_fraction", "init_seed", "tokenizer_vocab", "pretrain")),
    "continued": ("pretrained", ("successor",)),
    "predecessor": ("pretrained", ("fact_sft",)),
    "successor": ("continued", ("fact_sft",)),
    "instruct": ("predecessor", ("instruct",)),
}
# The roles the transplant stage loads, shipped with the package (grafting/assets/<name>).
SHIPPED = {role: f"tiny-transplant-{role}" for role in ("predecessor", "successor", "instruct")}
SHIP_COMMAND = "OMP_NUM_THREADS=1 python -m grafting.pretraining.transplant_pair --ship"


@dataclass
class PairRecipe:
    """Everything that determines the three models' weights.

    ``task``: n_keys, n_values, split_seed, prompt_template, answer_template of the fact table.
    ``pretrain``: steps, lr, warmup_steps, weight_decay, batch_size, seq_len, fact_repeats (copies of each
    known fact among the corpus chunks). ``successor``: the continued phase (steps, lr, warmup_steps,
    weight_decay, fact_repeats). ``fact_sft``: SFT on the facts (steps, lr, warmup_steps, batch_size).
    ``instruct``: steps, lr, warmup_steps, batch_size, fact_repeats, word_examples (per word task).
    """

    arch: dict[str, Any]
    task: dict[str, Any]
    pretrain: dict[str, Any]
    successor: dict[str, Any]
    fact_sft: dict[str, Any]
    instruct: dict[str, Any]
    known_fraction: float = 0.5
    init_seed: int = 0
    tokenizer_vocab: int = 4096

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> PairRecipe:
        return cls(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()})

    def key(self, role: str) -> str:
        """A hash of the fields ``role`` and the phases before it depend on, and of the corpus."""
        payload = {**role_recipe(self, role), "corpus": builtin_fingerprint()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def role_recipe(recipe: PairRecipe, role: str) -> dict[str, Any]:
    """What determines ``role``'s weights: the role, the fields of its phase and the phases before, the version."""
    fields: dict[str, Any] = {}
    phase: str | None = role
    while phase is not None:
        parent, names = PHASES[phase]
        fields.update({n: getattr(recipe, n) for n in names})
        phase = parent
    return {"role": role, **fields, "version": VERSION}


def fact_task(recipe: PairRecipe) -> KeyFacts:
    """The fact table: every fact is both a training and a test point."""
    t = recipe.task
    return KeyFacts(n_keys=int(t["n_keys"]), n_values=int(t["n_values"]), seed=int(t.get("split_seed", 0)),
                    prompt_template=str(t["prompt_template"]), answer_template=str(t["answer_template"]))


def known_facts(recipe: PairRecipe) -> list[ModExample]:
    """The predecessor's share of the facts: the first ``known_fraction`` of the shuffled table."""
    facts = fact_task(recipe).split("test")
    return facts[: round(recipe.known_fraction * len(facts))]


def mixture(facts: list[ModExample], repeats: int, tokenizer, seq_len: int) -> ConcatDataset:
    """The corpus's training chunks plus ``repeats`` copies of each fact (loss on its answer only).

    A fact inside a text chunk was tried first: with the whole chunk in the loss, 500 steps taught the
    predecessor the answer format but not one fact (greedy answers were one constant digit).
    """
    text = TextChunkDataset(split_texts(list(builtin_documents()), "train"), tokenizer, seq_len)
    return ConcatDataset([text, TaskSFTDataset(facts * repeats, tokenizer)])


def instruct_examples(recipe: PairRecipe) -> list:
    """The SFT mix: every fact plus word reversal and word copying (prompt, completion pairs)."""
    n = int(recipe.instruct["word_examples"])
    words = [WordOrderSkill(name=mode, mode=mode, prompt_template=template).split("train")[:n]
             for mode, template in (("reverse", "Reverse the words: {words}\nReversed:"),
                                    ("copy", "Repeat the words: {words}\nRepeated:"))]
    examples = fact_task(recipe).split("test") * int(recipe.instruct.get("fact_repeats", 1))
    examples += [ex for group in words for ex in group]
    random.Random(recipe.init_seed).shuffle(examples)
    return examples


def _fit(model, dataset, tokenizer, settings: dict[str, Any], seed: int) -> tuple[torch.nn.Module, float]:
    """Train every weight of ``model`` on ``dataset`` for ``settings['steps']`` steps; return it and the seconds."""
    steps = int(settings["steps"])
    data = GraftingDataModule(dataset, None, tokenizer.pad_token_id, int(settings["batch_size"]), seed=seed)
    L.seed_everything(seed, workers=True)
    module = CausalLMModule(model.train(), lr=float(settings["lr"]), weight_decay=float(settings.get("weight_decay", 0.0)),
                            warmup_steps=min(int(settings.get("warmup_steps", 0)), steps), max_steps=steps)
    trainer = L.Trainer(max_steps=steps, accelerator=settings.get("accelerator", "cpu"), devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return module.model.eval().cpu(), time.perf_counter() - start


def train_role(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train ``role`` from its parent phase (trained first when needed), cache it; return its report."""
    if role not in PHASES:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    tokenizer = builtin_tokenizer(recipe.tokenizer_vocab, cache_dir)
    seq_len = int(recipe.pretrain["seq_len"])
    parent = PHASES[role][0]
    model = build_random(recipe.arch, recipe.init_seed) if parent is None else load_role(recipe, parent, cache_dir)[0]
    seed = recipe.init_seed + ROLES.index(role)
    if role == "pretrained":
        data = mixture(known_facts(recipe), int(recipe.pretrain["fact_repeats"]), tokenizer, seq_len)
        cfg = recipe.pretrain
    elif role == "continued":
        data = mixture(fact_task(recipe).split("test"), int(recipe.successor["fact_repeats"]), tokenizer, seq_len)
        cfg = {"batch_size": recipe.pretrain["batch_size"], **recipe.successor}
    elif role in ("predecessor", "successor"):
        facts = known_facts(recipe) if role == "predecessor" else fact_task(recipe).split("test")
        data, cfg = TaskSFTDataset(facts, tokenizer), recipe.fact_sft
    else:
        data, cfg = TaskSFTDataset(instruct_examples(recipe), tokenizer), recipe.instruct
    model, seconds = _fit(model, data, tokenizer, cfg, seed)
    report = {"role": role, "parent": parent, "recipe": asdict(recipe), "train_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "corpus": builtin_fingerprint(), "key": recipe.key(role)}
    log.info("trained transplant %s in %.0fs", role, seconds)
    save_trained_model(role_path(recipe, role, cache_dir), model, tokenizer, "train_report.json", report)
    return report


def role_path(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "transplant_models" / f"{role}-{recipe.key(role)}"


def shipped_path(recipe: PairRecipe, role: str) -> Path | None:
    """The verified shipped folder of ``role`` when the package ships it for exactly this recipe, else None."""
    name = SHIPPED.get(role)
    if name is None or not shipped.matches(name, role_recipe(recipe, role)):
        return None
    return shipped.verified_folder(name)


def locate_role(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``role``'s weights are (or will be cached): shipped for the default recipe, else the cache."""
    return shipped_path(recipe, role) or role_path(recipe, role, cache_dir)


def load_role(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None):
    """``(model, tokenizer)`` of ``role``: shipped, else cached (verified), else trained now (once) and cached."""
    path = ensure_role(recipe, role, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def ensure_role(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None) -> Path:
    """The verified folder of ``role``: shipped, else cached, else trained now (a damaged entry is retrained)."""
    path = shipped_path(recipe, role)
    if path is not None:
        return path
    path = role_path(recipe, role, cache_dir)
    if cache.lookup(path) is None:
        log.info("no cached transplant %s at %s: training it now (once).", role, path)
        with torch.random.fork_rng():  # training on a cache miss must not move the caller's RNG
            train_role(recipe, role, cache_dir)
    return path


def train_report(recipe: PairRecipe, role: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """``role``'s training report, shipped or cached (verified); it trains nothing."""
    path = shipped_path(recipe, role) or cache.require(role_path(recipe, role, cache_dir),
                                                       f"load_role(recipe, {role!r}) trains it and caches it")
    return json.loads((path / "train_report.json").read_text())


def ship_roles(recipe: PairRecipe, cache_dir: str | Path | None = None, scores: dict[str, Any] | None = None,
               overwrite: bool = False) -> list[Path]:
    """Copy the cached predecessor, successor and instruct into ``grafting/assets`` (trained first if missing).

    ``scores``: per role, measured scores to record in the manifest (e.g. the fact accuracy).
    """
    folders = []
    for role, name in SHIPPED.items():
        path = role_path(recipe, role, cache_dir)
        if cache.lookup(path) is None:
            train_role(recipe, role, cache_dir)
        report = json.loads((path / "train_report.json").read_text())
        if report.get("key") != recipe.key(role):
            raise ValueError(f"{path}: its report's key {report.get('key')} is not {recipe.key(role)}")
        manifest_report = {**report, "recipe": role_recipe(recipe, role)}
        extra = {"role": role, "key": recipe.key(role), "scores": (scores or {}).get(role, {})}
        folders.append(shipped.ship(name, path, manifest_report, SHIP_COMMAND, overwrite=overwrite, extra=extra))
    return folders


def main(argv: list[str] | None = None) -> None:
    """``--ship``: ship the default recipe's roles from ``GRAFTING_CACHE_DIR`` (training what it lacks)."""
    import argparse

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ship", action="store_true", help="copy the cached roles into grafting/assets")
    args = parser.parse_args(argv)
    if args.ship:
        logging.basicConfig(level=logging.INFO)
        conf = Path(__file__).resolve().parents[2] / "conf"
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="train", overrides=["stage=transplant"])
        recipe = PairRecipe.from_dict(OmegaConf.to_container(cfg.transplant.models, resolve=True))
        # The fact scores are measured by the stage (its target / source rows); kept while the key is unchanged.
        old = {role: shipped.manifest(name) or {} for role, name in SHIPPED.items()}
        scores = {role: m.get("scores", {}) for role, m in old.items() if m.get("key") == recipe.key(role)}
        for folder in ship_roles(recipe, scores=scores, overwrite=True):
            print(folder)


if __name__ == "__main__":
    main()
