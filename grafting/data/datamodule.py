"""LightningDataModule and the builders that turn the ``dataloader`` config into datasets."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from grafting import names
from grafting.data.corpus import TextSource, builtin_documents, load_text_dataset, text_source
from grafting.data.datasets import MixedDataset, TaskSFTDataset, TextChunkDataset, pad_collate
from grafting.data.modular import ModularAddition, task_from_config
from grafting.errors import ConfigError

KINDS = names.LOADER_KINDS
log = logging.getLogger(__name__)


def split_texts(texts: list[str], split: str, val_every: int = 20) -> list[str]:
    """Deterministic split: every ``val_every``-th document is validation, the rest is train."""
    if split == "validation":
        return texts[::val_every]
    return [t for i, t in enumerate(texts) if i % val_every]


@dataclass(frozen=True)
class DataSpec:
    """What a datamodule serves (the ``dataloader`` config node).

    ``kind``: ``mod`` (the task's train split), ``text`` (chunks of ``text``) or ``mixed`` (a fraction
    ``mix_ratio`` of task items among text chunks). ``max_chunks`` caps the text chunks.
    """

    kind: str = "text"
    batch_size: int = 32
    seq_len: int = 64
    mix_ratio: float = 0.5
    max_chunks: int | None = None
    num_workers: int = 0
    text: TextSource = field(default_factory=TextSource)


def data_spec(spec: DataSpec | Mapping[str, Any], **changes: Any) -> DataSpec:
    """A :class:`DataSpec` from itself or from a mapping with the same keys, with ``changes`` applied."""
    if not isinstance(spec, DataSpec):
        values = {f.name: spec[f.name] for f in fields(DataSpec) if f.name in spec}
        values["text"] = text_source(values.get("text") or {})
        spec = DataSpec(**values)
    return replace(spec, **changes) if changes else spec


def text_documents(source: TextSource | Mapping[str, Any], split: str) -> list[str]:
    """The documents of ``split`` (train or validation) of a text source."""
    src = text_source(source)
    # the built-in corpus is a list already: no round trip through an Arrow table (nor datasets' import)
    texts = list(builtin_documents()) if src.source == "builtin" else [row["text"] for row in load_text_dataset(src)]
    if not texts:
        raise ConfigError("dataloader.text", f"the {src.source!r} corpus is empty.")
    return split_texts(texts, split)


def build_dataset(spec: DataSpec | Mapping[str, Any], task: ModularAddition | Mapping[str, Any], tokenizer,
                  split: str, seed: int = 0, task_items: str = "train") -> Dataset:
    """The dataset named by ``spec.kind`` for ``split`` in {train, validation}.

    Task items come from the task's own splits, so its test items are never seen in training or alignment:
    ``split="validation"`` takes its ``validation`` items, ``split="train"`` its ``task_items`` split:
    ``train`` for anything that trains translators (only the training keys of a table of facts),
    ``finetune`` for the block's fine-tune (every fact of a table: the block stores them all).
    """
    spec = data_spec(spec)
    kind = spec.kind
    seq_len = int(spec.seq_len)
    if kind not in KINDS:
        raise ConfigError("dataloader.kind", f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}.")

    def task_ds() -> Dataset:
        problems = task_from_config(task)
        return TaskSFTDataset(problems.split("validation" if split == "validation" else task_items), tokenizer,
                              seq_len)

    def text_ds() -> Dataset:
        return TextChunkDataset(text_documents(spec.text, split), tokenizer, seq_len, spec.max_chunks)

    if kind == "mod":
        return task_ds()
    if kind == "text":
        return text_ds()
    return MixedDataset(task_ds(), text_ds(), float(spec.mix_ratio), seed=seed)


class ResumableSampler(DistributedSampler):
    """Seeded shuffling, split across processes and resumable in the middle of an epoch.

    Epoch ``e`` visits one permutation of the dataset, the same in every process: the one that a
    ``DataLoader(shuffle=True, generator=Generator().manual_seed(seed))`` yields in its ``e``-th pass
    (so single-process runs keep the numbers they had before this sampler existed). Process ``r``
    of ``N`` takes ``perm[r::N]`` (padded to a multiple of ``N`` as ``DistributedSampler`` does), so
    ``N`` processes with batch ``B`` see, step for step, the ``N*B`` samples one process with batch
    ``N*B`` sees.

    ``skip(n)`` drops the first ``n`` samples of the epoch's permutation (all processes together)
    from the next iterator only: a run resumed from a mid-epoch checkpoint goes on with the batches
    it had not trained on yet. ``len()`` stays the full epoch so Lightning's batch counters, restored
    from the checkpoint, still line up.

    Being a ``DistributedSampler`` tells Lightning (``use_distributed_sampler``) that the data is
    already split: it does not inject a sampler of its own.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, num_replicas: int = 1, rank: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._start = 0
        self._generator: torch.Generator | None = None
        self._generator_epoch = -1  # the epoch whose permutation was drawn last from _generator

    def skip(self, samples: int) -> None:
        self._start = max(0, int(samples))

    def permutation(self, epoch: int) -> list[int]:
        """The order of epoch ``epoch`` (all processes), before padding."""
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        if self._generator is None or epoch <= self._generator_epoch:
            self._generator = torch.Generator().manual_seed(self.seed)
            self._generator_epoch = -1
        while True:  # epochs are drawn in order from one generator, cached across calls
            # The draws of one pass of a shuffling DataLoader: its iterator's base seed, the permutation,
            # and the empty tail RandomSampler draws once the permutation is exhausted.
            torch.empty((), dtype=torch.int64).random_(generator=self._generator)
            perm = torch.randperm(n, generator=self._generator)
            torch.randperm(n, generator=self._generator)
            self._generator_epoch += 1
            if self._generator_epoch == epoch:
                return perm.tolist()

    def __iter__(self) -> Iterator[int]:
        indices = self.permutation(self.epoch)
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += (indices * (padding // len(indices) + 1))[:padding]
        start, self._start = self._start, 0
        return iter(indices[start + self.rank:self.total_size:self.num_replicas])


class GraftingDataModule(L.LightningDataModule):
    """Wraps a train and a validation dataset; shuffling is seeded so runs are reproducible.

    Distributed (``trainer=ddp``): every process gets ``batch_size`` samples per step, so the
    global batch is ``world_size * batch_size`` (see :class:`ResumableSampler`). The position in the
    epoch is saved in Lightning checkpoints (``state_dict``), so a run resumed from ``last.ckpt``
    continues with the same batches an uninterrupted run would have seen.
    """

    def __init__(self, train: Dataset, val: Dataset | None, pad_id: int, batch_size: int, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.collate = pad_collate(pad_id)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self._sampler: ResumableSampler | None = None
        self._resume: dict[str, Any] | None = None

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (1, 0) if trainer is None else (int(trainer.world_size), int(trainer.global_rank))

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = ResumableSampler(self.train, self.seed, num_replicas=world, rank=rank)
        drop_last = len(sampler) > self.batch_size
        if self._resume is not None:
            state, self._resume = self._resume, None
            epoch, samples = int(state["epoch"]), int(state["samples"])
            per_epoch = (len(sampler) // self.batch_size if drop_last else -(-len(sampler) // self.batch_size))
            if samples >= per_epoch * self.batch_size * world:  # saved at the end of an epoch: the next one
                epoch, samples = epoch + 1, 0
            if (state.get("world_size"), state.get("batch_size")) != (world, self.batch_size):
                log.warning("resuming with %d process(es) x batch %d, the checkpoint was written with %s x %s: "
                            "the rest of the epoch is still covered once, but the batches differ from an "
                            "uninterrupted run.",
                            world, self.batch_size, state.get("world_size"), state.get("batch_size"))
            sampler.set_epoch(epoch)  # Lightning sets it too, but only after it has drawn the first batch
            sampler.skip(samples)
        self._sampler = sampler
        # the generator only seeds worker processes; it keeps the global RNG untouched, as before
        return DataLoader(self.train, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, drop_last=drop_last,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        return DataLoader(self.val, batch_size=self.batch_size, collate_fn=self.collate, num_workers=self.num_workers)

    def state_dict(self) -> dict[str, Any]:
        """Where training is in the epoch: saved by Lightning in every checkpoint of a ``fit``."""
        trainer = self.trainer
        if self._sampler is None or trainer is None:
            return {}
        batches = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        world, _ = self._world()
        return {"train_sampler": {"seed": self.seed, "epoch": int(self._sampler.epoch), "world_size": world,
                                  "batch_size": self.batch_size, "samples": batches * self.batch_size * world}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning before ``train_dataloader`` when a fit resumes from a checkpoint."""
        self._resume = state_dict.get("train_sampler")
        if self._resume is not None:
            # Lightning cannot see that the sampler resumes (the DataLoader itself has no state_dict).
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")


def build_datamodule(spec: DataSpec | Mapping[str, Any], task: ModularAddition | Mapping[str, Any], tokenizer,
                     seed: int, with_val: bool = True, task_items: str = "train") -> GraftingDataModule:
    """Train (and validation) datasets of ``spec`` in a seeded :class:`GraftingDataModule`; ``task_items``: the
    task split that trains (see :func:`build_dataset`)."""
    spec = data_spec(spec)
    train = build_dataset(spec, task, tokenizer, "train", seed, task_items)
    val = build_dataset(spec, task, tokenizer, "validation", seed) if with_val else None
    return GraftingDataModule(train, val, tokenizer.pad_token_id, int(spec.batch_size), seed, int(spec.num_workers))
