"""LightningDataModule and the builders that turn the ``dataloader`` config into datasets."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from grafting.data.corpus import load_text_dataset
from grafting.data.datasets import MixedDataset, TaskSFTDataset, TextChunkDataset, pad_collate
from grafting.data.modular import task_from_config
from grafting.errors import ConfigError

KINDS = ("mod", "text", "mixed")


def split_texts(texts: list[str], split: str, val_every: int = 20) -> list[str]:
    """Deterministic split: every ``val_every``-th document is validation, the rest is train."""
    if split == "validation":
        return texts[::val_every]
    return [t for i, t in enumerate(texts) if i % val_every]


def text_documents(text_cfg, split: str) -> list[str]:
    ds = load_text_dataset(text_cfg)
    texts = [row["text"] for row in ds]
    if not texts:
        raise ConfigError("dataloader.text", f"the {text_cfg.source!r} corpus is empty.")
    return split_texts(texts, split)


def build_dataset(loader_cfg, task_cfg, tokenizer, split: str, seed: int = 0) -> Dataset:
    """The dataset named by ``dataloader.kind`` for ``split`` in {train, validation}.

    ``mod`` uses the task's train split for both (validation = a held-out slice of it), so the
    1000 test points are never seen in training or alignment.
    """
    kind = loader_cfg.kind
    seq_len = int(loader_cfg.seq_len)
    if kind not in KINDS:
        raise ConfigError("dataloader.kind", f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}.")

    def task_ds() -> Dataset:
        train = task_from_config(task_cfg).split("train")
        n_val = max(1, len(train) // 20)
        return TaskSFTDataset(train[:n_val] if split == "validation" else train[n_val:], tokenizer, seq_len)

    def text_ds() -> Dataset:
        max_chunks = loader_cfg.get("max_chunks")
        return TextChunkDataset(text_documents(loader_cfg.text, split), tokenizer, seq_len, max_chunks)

    if kind == "mod":
        return task_ds()
    if kind == "text":
        return text_ds()
    return MixedDataset(task_ds(), text_ds(), float(loader_cfg.mix_ratio), seed=seed)


class GraftingDataModule(L.LightningDataModule):
    """Wraps a train and a validation dataset; shuffling is seeded so runs are reproducible."""

    def __init__(self, train: Dataset, val: Dataset | None, pad_id: int, batch_size: int, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.collate = pad_collate(pad_id)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, generator=generator,
                          collate_fn=self.collate, num_workers=self.num_workers, drop_last=len(self.train) > self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        return DataLoader(self.val, batch_size=self.batch_size, collate_fn=self.collate, num_workers=self.num_workers)


def build_datamodule(loader_cfg, task_cfg, tokenizer, seed: int, with_val: bool = True) -> GraftingDataModule:
    train = build_dataset(loader_cfg, task_cfg, tokenizer, "train", seed)
    val = build_dataset(loader_cfg, task_cfg, tokenizer, "validation", seed) if with_val else None
    return GraftingDataModule(train, val, tokenizer.pad_token_id, int(loader_cfg.batch_size), seed,
                              int(loader_cfg.get("num_workers", 0)))
