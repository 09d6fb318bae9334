"""Word-order skills: reverse (or copy) a short list of words. A second task family for SkillPacks.

Prompt (configurable)::

    Reverse the words: file list value
    Reversed:

target continuation `` value list file``. Words are drawn from :data:`WORDS`, common words of the
built-in corpus (the CPython docs), so the tiny tokenizer knows them. The split is deterministic:
all ordered word tuples, shuffled with ``split_seed``; the first ``test_size`` are the test set.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grafting.data.skill_example import SkillExample
from grafting.errors import ConfigError
from grafting.metrics.task import answer_line

WORDS = ("file", "list", "string", "value", "object", "class", "module", "function", "error", "name",
         "type", "data", "line", "code", "time", "path", "key", "item", "number", "method", "table",
         "index", "mode", "test", "text", "word", "group", "user", "field", "block", "stack", "queue",
         "tree", "node", "color", "event", "thread", "window", "option", "format")
DEFAULT_PROMPT = "Reverse the words: {words}\nReversed:"
#: Instructions never used in training, all ending in the same "Answer:": the router is tested on these,
#: so its accuracy does not come from recognising each task's own template.
PARAPHRASES = {"reverse": "Say these words backwards, last one first: {words}\nAnswer:",
               "copy": "Write the same words again in the same order: {words}\nAnswer:",
               "sort": "Put these words in alphabetical order: {words}\nAnswer:"}
#: Other wordings for *training* a router (``skillpack.fusion.router.paraphrases``), cycled over the train and
#: val items; none is the held-out wording above, and they end in several cues, so no cue gives the task away.
TRAIN_PARAPHRASES = {
    "reverse": ["Give the words in the opposite order: {words}\nAnswer:",
                "Turn this word list around so it ends with the first word: {words}\nOutput:",
                "Read the words from right to left: {words}\nResult:",
                "Invert the order of these words: {words}\nAnswer:"],
    "copy": ["Repeat the words exactly: {words}\nAnswer:",
             "Echo this word list unchanged: {words}\nOutput:",
             "Say the words again, keeping their order: {words}\nResult:",
             "Copy these words as they are: {words}\nAnswer:"],
    "sort": ["Arrange the words from A to Z: {words}\nAnswer:",
             "List these words the way a dictionary would: {words}\nOutput:",
             "Order the words alphabetically: {words}\nResult:",
             "Sort this word list by spelling: {words}\nAnswer:"]}
MODES = ("reverse", "copy", "sort")


@dataclass(frozen=True)
class WordOrderSkill:
    """Reverse (``mode=reverse``), repeat (``mode=copy``) or sort alphabetically (``mode=sort``) ``n_words``
    distinct words. Every mode's answer depends on the input's content."""

    name: str
    n_words: int = 3
    vocab_size: int = len(WORDS)
    mode: str = "reverse"
    test_size: int = 1000
    val_size: int = 300
    split_seed: int = 0
    prompt_template: str = DEFAULT_PROMPT

    def __post_init__(self) -> None:
        key = f"skill.tasks.{self.name}"
        if self.mode not in MODES:
            raise ConfigError(f"{key}.mode", f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}.")
        if not 2 <= self.vocab_size <= len(WORDS):
            raise ConfigError(f"{key}.vocab_size", f"must be in [2, {len(WORDS)}], got {self.vocab_size}.")
        if not 1 <= self.n_words <= self.vocab_size:
            raise ConfigError(f"{key}.n_words", f"must be in [1, vocab_size], got {self.n_words}.")
        if self._count() > 1_000_000:
            raise ConfigError(f"{key}.n_words", f"{self._count()} word tuples is too many; use fewer words.")
        if not 0 < self.test_size < self._count():
            raise ConfigError(f"{key}.test_size", f"must be in (0, {self._count()}), got {self.test_size}.")
        if not 0 < self.val_size < self._count() - self.test_size:
            raise ConfigError(f"{key}.val_size",
                              f"must be in (0, {self._count() - self.test_size}), got {self.val_size}.")
        if "{words}" not in self.prompt_template:
            raise ConfigError(f"{key}.prompt_template", "the prompt template must contain {words}.")

    def _count(self) -> int:
        count = 1
        for i in range(self.n_words):
            count *= self.vocab_size - i
        return count

    def _tuples(self) -> list[tuple[str, ...]]:
        return _shuffled_tuples(self.n_words, self.vocab_size, self.split_seed)

    def example(self, words: Sequence[str]) -> SkillExample:
        out = {"reverse": list(reversed(words)), "copy": list(words), "sort": sorted(words)}[self.mode]
        return SkillExample(self.prompt_template.format(words=" ".join(words)), " " + " ".join(out), " ".join(out))

    def split(self, name: str) -> list[SkillExample]:
        """``test``: the first ``test_size`` shuffled tuples; ``val``: the next ``val_size``; ``train``: the rest."""
        return [self.example(t) for t in self._split_tuples(name)]

    def _split_tuples(self, name: str) -> list[tuple[str, ...]]:
        tuples = self._tuples()
        cut = self.test_size + self.val_size
        if name == "test":
            return tuples[: self.test_size]
        if name == "val":
            return tuples[self.test_size : cut]
        if name == "train":
            return tuples[cut:]
        raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'.")

    def router_prompts(self, split: str) -> list[str]:
        """The ``split``'s problems reworded: ``test`` under the held-out paraphrase (:data:`PARAPHRASES`),
        ``train`` and ``val`` under the training paraphrases (:data:`TRAIN_PARAPHRASES`, cycled)."""
        if split == "test":
            return [PARAPHRASES[self.mode].format(words=" ".join(t)) for t in self._split_tuples(split)]
        wordings = TRAIN_PARAPHRASES[self.mode]
        return [wordings[i % len(wordings)].format(words=" ".join(t)) for i, t in enumerate(self._split_tuples(split))]

    def score(self, outputs: Sequence[str], examples: Sequence[SkillExample]) -> dict[str, float]:
        """On the answer line: ``exact`` = the words equal the answer; ``words`` = share of word positions
        right; ``score`` = their mean."""
        if len(outputs) != len(examples):
            raise ValueError(f"{len(outputs)} outputs but {len(examples)} examples")
        if not outputs:
            return {"exact": float("nan"), "words": float("nan"), "score": float("nan"), "n": 0}
        exact, positions = 0.0, 0.0
        for out, ex in zip(outputs, examples, strict=True):
            got, want = answer_line(out).split(), str(ex.answer).split()
            exact += float(got == want)
            positions += sum(g == w for g, w in zip(got, want, strict=False)) / len(want)
        n = len(outputs)
        return {"exact": exact / n, "words": positions / n, "score": (exact + positions) / (2 * n), "n": n}


@functools.lru_cache(maxsize=8)
def _shuffled_tuples(n_words: int, vocab_size: int, seed: int) -> list[tuple[str, ...]]:
    """Every ordered tuple of distinct words, shuffled; cached because every split call needs it."""
    words = WORDS[:vocab_size]
    tuples = list(itertools.permutations(words, n_words))
    random.Random(seed).shuffle(tuples)
    return tuples


def build_reverse(name: str, spec: Mapping[str, Any]) -> WordOrderSkill:
    """A :class:`WordOrderSkill` from a ``skill.tasks`` entry."""
    known = {"n_words", "vocab_size", "mode", "test_size", "val_size", "split_seed", "prompt_template"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"skill.tasks.{name}", f"unknown keys {unknown}; allowed: {sorted(known)}.")
    kwargs = {k: (str(v) if k in ("mode", "prompt_template") else int(v)) for k, v in spec.items()}
    return WordOrderSkill(name=name, **kwargs)
