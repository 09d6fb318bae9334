"""The offline MLM scorer: a tiny ``BertForMaskedLM`` pretrained on the built-in corpus.

It stands in for bert-base-uncased (the paper's scorer) where there is no hub. Its tokenizer is a
lower-casing WordPiece trained on the same corpus, so ``word_ids()`` splits texts into words the
way BERT's does. Shipped as ``grafting/assets/tiny-mlm`` with its held-out masked-token accuracy;
``python train.py stage=pretrain_mlm stage.ship=true`` regenerates it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from grafting.artifacts import atomic_dir, write_json_atomic
from grafting.data.corpus import builtin_documents, builtin_fingerprint
from grafting.data.datamodule import split_texts
from grafting.modules.causal_lm import CausalLMModule

log = logging.getLogger(__name__)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(vocab_size: int) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer trained on the built-in corpus (deterministic)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(builtin_documents(), trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                          special_tokens=SPECIALS,
                                                                          show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


class MaskedChunks(Dataset):
    """``[CLS] + seq_len - 2 tokens + [SEP]`` chunks of the documents; masking happens per batch."""

    def __init__(self, texts: list[str], tokenizer, seq_len: int):
        stream: list[int] = []
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            stream.extend(ids + [tokenizer.sep_token_id])
        body = seq_len - 2
        n = len(stream) // body
        chunks = torch.tensor(stream[: n * body]).view(n, body)
        cls = torch.full((n, 1), tokenizer.cls_token_id)
        sep = torch.full((n, 1), tokenizer.sep_token_id)
        self.chunks = torch.cat([cls, chunks, sep], dim=1)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.chunks[i]


def mask_batch(ids: torch.Tensor, tokenizer, prob: float, generator: torch.Generator | None = None) -> dict:
    """BERT's masking: ``prob`` of the non-special tokens are targets; 80% [MASK], 10% random, 10% kept."""
    ids = ids.clone()
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[swap] = torch.randint(len(SPECIALS), len(tokenizer), (int(swap.sum()),), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@torch.no_grad()
def masked_accuracy(model, tokenizer, data: MaskedChunks, prob: float, batch_size: int = 64) -> float:
    """Top-1 accuracy on the masked positions of ``data`` (a fixed masking: seed 0)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    correct = total = 0
    for start in range(0, len(data), batch_size):
        batch = mask_batch(data.chunks[start:start + batch_size], tokenizer, prob, gen)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        target = batch["labels"] != -100
        correct += int((logits.argmax(-1)[target] == batch["labels"][target]).sum())
        total += int(target.sum())
    return correct / max(1, total)


def pretrain_mlm(recipe: dict[str, Any], out_dir: str | Path, progress_bar: bool = False) -> dict[str, Any]:
    """Train the tokenizer and the BERT of ``recipe`` and save both in ``out_dir``; return the report."""
    cfg = recipe["pretrain"]
    seed, prob, seq_len = int(recipe["seed"]), float(cfg["mask_prob"]), int(cfg["seq_len"])
    tokenizer = train_wordpiece(int(recipe["vocab_size"]))
    docs = list(builtin_documents())
    train = MaskedChunks(split_texts(docs, "train"), tokenizer, seq_len)
    val = MaskedChunks(split_texts(docs, "validation"), tokenizer, seq_len)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        max_position_embeddings=seq_len, **recipe["arch"])
    with torch.random.fork_rng():
        L.seed_everything(seed, workers=True, verbose=False)
        model = BertForMaskedLM(config)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(train, batch_size=int(cfg["batch_size"]), shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(seed),
                            collate_fn=lambda rows: mask_batch(torch.stack(rows), tokenizer, prob, gen))
        module = CausalLMModule(model.train(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]),
                                warmup_steps=int(cfg["warmup_steps"]), max_steps=int(cfg["steps"]))
        trainer = L.Trainer(max_steps=int(cfg["steps"]), accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=progress_bar,
                            enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0)
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        seconds = time.perf_counter() - start
    model = module.model.eval()
    report = {"kind": "masked_lm", "name": "tiny-mlm", "recipe": recipe, "train_seconds": round(seconds, 1),
              "heldout_masked_accuracy": round(masked_accuracy(model, tokenizer, val, prob), 4),
              "train_chunks": len(train), "corpus": builtin_fingerprint(), "threads": torch.get_num_threads()}
    log.info("pretrained tiny-mlm: held-out masked-token accuracy %.3f in %.0fs",
             report["heldout_masked_accuracy"], seconds)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "pretrain_report.json", report)
    return report
