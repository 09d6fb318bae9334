"""Language preservation: held-out texts are truncated and continued by the model.

Paper metrics: P (word-entropy perplexity of the continuation) and MLM predictability under a
BERT. Ours: token perplexity of prompt + continuation under a reference model (the host), and the
mean KL between the host's and the model's next-token distributions on held-out text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from grafting.data.corpus import TextSource
from grafting.data.datamodule import text_documents
from grafting.data.datasets import TextChunkDataset
from grafting.generation import generate_continuations
from grafting.metrics.language import (
    mlm_predictability,
    next_token_kl,
    token_perplexity,
    word_entropy_perplexity,
)
from grafting.schema.graft import LanguageSettings  # the evaluation.language recipe (defaults, checks)


def language_settings(spec: LanguageSettings | Mapping[str, Any]) -> LanguageSettings:
    """:class:`LanguageSettings` from itself or from a mapping with the same keys."""
    if isinstance(spec, LanguageSettings):
        return spec
    return LanguageSettings(**{k: spec[k] for k in LanguageSettings.model_fields if k in spec})


@dataclass
class LanguageProbe:
    """The fixed held-out material every model is evaluated on."""

    prompts: list[str]
    kl_ids: torch.Tensor
    kl_mask: torch.Tensor


def build_probe(corpus: TextSource | Mapping[str, Any], tokenizer, n_texts: int, prompt_tokens: int, kl_texts: int,
                kl_seq_len: int) -> LanguageProbe:
    """The first ``n_texts`` held-out documents cut to ``prompt_tokens``, and ``kl_texts`` chunks for the KL."""
    docs = text_documents(corpus, "validation")
    prompts = []
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(ids) > prompt_tokens:  # only texts long enough to be truncated
            prompts.append(tokenizer.decode(ids[:prompt_tokens]))
        if len(prompts) == n_texts:
            break
    chunks = TextChunkDataset(docs, tokenizer, kl_seq_len, max_chunks=kl_texts).chunks
    return LanguageProbe(prompts, chunks, torch.ones_like(chunks))


def evaluate_language(model, tokenizer, probe: LanguageProbe, settings: LanguageSettings = LanguageSettings(),
                      reference=None, mlm: tuple[Any, Any] | None = None) -> dict[str, float]:
    """P, MLM (if an MLM is given), ppl under ``reference`` and KL(reference || model)."""
    continuations = generate_continuations(model, tokenizer, probe.prompts,
                                           max_new_tokens=int(settings.max_new_tokens),
                                           batch_size=int(settings.batch_size))
    items: dict[str, list[float]] = {"P": [word_entropy_perplexity(t) for t in continuations]}
    out: dict[str, float] = {"P": sum(items["P"]) / max(1, len(continuations)), "MLM": float("nan")}
    if mlm is not None:
        items["MLM"] = []
        out["MLM"] = mlm_predictability(continuations, mlm[0], mlm[1], top_k=int(settings.mlm_top_k),
                                        per_text=items["MLM"])
    if reference is not None:
        texts = [p + c for p, c in zip(probe.prompts, continuations, strict=False)]
        nll: list[float] = []
        out["ppl_ref"] = token_perplexity(reference, tokenizer, texts, per_text=nll)
        # the item variance of the perplexity by the delta method: ppl = exp(mean NLL)
        items["ppl_ref"] = [out["ppl_ref"] * x for x in nll]
        device = next(model.parameters()).device
        items["kl_host"] = []
        out["kl_host"] = next_token_kl(reference, model, probe.kl_ids.to(device), probe.kl_mask.to(device),
                                       per_text=items["kl_host"])
    out = {k: (float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan"))
           for k, v in out.items()}
    for name, values in items.items():  # what the interval needs to count the texts' noise (metrics/stats.py)
        out[f"{name}_n"] = float(len(values))
        out[f"{name}_item_var"] = item_variance(values)
    return out


def item_variance(values: list[float]) -> float:
    """The sample variance of per-item values (NaN for fewer than two)."""
    if len(values) < 2:
        return float("nan")
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def load_mlm(name_or_path: str | None):
    """A masked LM and its tokenizer; None to skip MLM.

    ``builtin`` is the tiny BERT shipped with the package (offline default), else a hub id such as
    ``bert-base-uncased`` (the paper's, needs a network) or a local folder.
    """
    if not name_or_path:
        return None
    from pathlib import Path

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from grafting.errors import ConfigError
    from grafting.models.loading import hub_reachable

    if name_or_path == "builtin":
        from grafting.models import shipped

        name_or_path = str(shipped.verified_folder("tiny-mlm"))

    local = Path(name_or_path).is_dir()
    if not local and not hub_reachable():
        try:
            return (AutoModelForMaskedLM.from_pretrained(name_or_path, local_files_only=True).eval(),
                    AutoTokenizer.from_pretrained(name_or_path, local_files_only=True))
        except OSError as err:
            raise ConfigError("evaluation.language.mlm_model",
                              f"{name_or_path!r} is not a local folder and the hub is unreachable; "
                              "use a local BertForMaskedLM folder or null to skip MLM.") from err
    return AutoModelForMaskedLM.from_pretrained(name_or_path).eval(), AutoTokenizer.from_pretrained(name_or_path)
