"""Tokenised datasets for the three kinds of batches: task SFT, text chunks, and a mix of both."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from grafting.data.modular import ModExample

log = logging.getLogger(__name__)
IGNORE = -100


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """The ids of each text without special tokens: ``tokenizer(text, add_special_tokens=False)["input_ids"]``.

    One batched call to a fast tokenizer's Rust backend when there is one (the same ids, without the
    per-text Python of the wrapper: ten thousand task prompts in a tenth of the time).
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    # the wrapper leaves padding or truncation set on the backend after a call that asked for them
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class TaskSFTDataset(Dataset):
    """Prompt + completion + EOS; ``labels`` cover the completion only (loss on the answer tokens)."""

    def __init__(self, examples: Sequence[ModExample], tokenizer, max_length: int = 128):
        self.items: list[dict[str, torch.Tensor]] = []
        skipped = 0
        prompts = token_ids(tokenizer, [ex.prompt for ex in examples])
        answers = token_ids(tokenizer, [ex.completion for ex in examples])
        for prompt, answer in zip(prompts, answers, strict=True):
            answer = answer + [tokenizer.eos_token_id]
            ids = prompt + answer
            if not prompt or len(ids) > max_length:
                skipped += 1  # malformed or overlong rows are counted, not crashed on
                continue
            labels = [IGNORE] * len(prompt) + answer
            self.items.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)})
        if skipped:
            log.warning("TaskSFTDataset: skipped %d of %d rows (empty prompt or longer than %d tokens).",
                        skipped, len(examples), max_length)
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


class TextChunkDataset(Dataset):
    """Documents joined with EOS and cut into chunks of ``seq_len`` tokens (causal-LM labels = inputs)."""

    def __init__(self, texts: Iterable[str], tokenizer, seq_len: int = 128, max_chunks: int | None = None):
        stream: list[int] = []
        kept = skipped = 0
        batch: list[str] = []

        def flush() -> None:
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                stream.extend(ids + [tokenizer.eos_token_id])

        for text in texts:
            if not isinstance(text, str) or not text.strip():
                skipped += 1  # empty or non-text rows are counted, not crashed on
                continue
            batch.append(text)
            kept += 1
            if len(batch) == 256:
                flush()
                batch = []
                if max_chunks is not None and len(stream) >= (max_chunks + 1) * seq_len:
                    break
        if batch:
            flush()
        n = len(stream) // seq_len
        if max_chunks is not None:
            n = min(n, max_chunks)
        if n == 0:
            raise ValueError(f"the corpus gave no chunk of {seq_len} tokens ({kept} texts, {skipped} empty).")
        self.chunks = torch.tensor(stream[: n * seq_len]).view(n, seq_len)
        self.skipped = skipped
        if skipped:
            log.warning("TextChunkDataset: skipped %d empty or non-text rows.", skipped)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.chunks[i]
        return {"input_ids": ids, "labels": ids}


class MixedDataset(Dataset):
    """A deterministic interleaving: a fraction ``task_ratio`` of the items come from ``task``."""

    def __init__(self, task: Dataset, text: Dataset, task_ratio: float, seed: int = 0):
        if not 0.0 <= task_ratio <= 1.0:
            raise ValueError(f"task_ratio must be in [0, 1], got {task_ratio}")
        size = len(task) + len(text)
        n_task = min(len(task), round(task_ratio * size))
        n_text = min(len(text), size - n_task)
        rng = random.Random(seed)
        self.index = [(0, i) for i in rng.sample(range(len(task)), n_task)]
        self.index += [(1, i) for i in rng.sample(range(len(text)), n_text)]
        rng.shuffle(self.index)
        self.sources = (task, text)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        source, j = self.index[i]
        return self.sources[source][j]


def pad_collate(pad_id: int):
    """Right-pad ``input_ids`` with ``pad_id`` and ``labels`` with -100; build the attention mask."""

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = it["input_ids"]
            labels[row, :n] = it["labels"]
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate
