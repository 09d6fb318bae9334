"""Word-order skills: reverse (or copy) a short list of words. A second task family for SkillPacks.

Prompt (configurable)::

    Reverse the words: file list value
    Reversed:

target continuation `` value list file``. Words are drawn from :data:`WORDS`, common words of the
built-in corpus (the CPython docs), so the tiny tokenizer knows them. The split is deterministic:
all ordered word tuples, shuffled with ``split_seed``; the first ``test_size`` are the test set.

With ``pool=k`` a skill draws its words from the ``k``-th of :data:`N_POOLS` disjoint pools of 16 words
instead, so skills on different pools can be told apart by their content alone. Every skill can be asked
in three wordings (:meth:`WordOrderSkill.worded`): its own template, a paraphrase, and ``content``: the
words alone in one frame shared by every skill (:data:`CONTENT_FRAME`), with no instruction at all.
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
#: Forty more single-token words of the built-in corpus; with WORDS they make the disjoint pools (``pool=k``).
EXTRA_WORDS = ("argument", "instance", "default", "state", "command", "sequence", "result", "header", "version",
               "example", "message", "integer", "variable", "element", "context", "pattern", "server", "frame",
               "source", "position", "filename", "mapping", "stream", "handler", "socket", "document", "program",
               "clause", "suite", "package", "request", "address", "section", "subclass", "prefix", "parser",
               "range", "target", "length", "process")
N_POOLS = 5
DEFAULT_PROMPT = "Reverse the words: {words}\nReversed:"
#: The frame of a content-only prompt: the words and the cue every paraphrase ends in, nothing that names a task.
CONTENT_FRAME = "{words}\nAnswer:"
WORDINGS = ("template", "paraphrase", "content")
#: Instructions never used in training, all ending in the same "Answer:": the router is tested on these,
#: so its accuracy does not come from recognising each task's own template.
PARAPHRASES = {"reverse": "Say these words backwards, last one first: {words}\nAnswer:",
               "copy": "Write the same words again in the same order: {words}\nAnswer:",
               "sort": "Put these words in alphabetical order: {words}\nAnswer:",
               "rotate": "Take the first word and put it after the others: {words}\nAnswer:",
               "sort_desc": "Put these words in reverse alphabetical order: {words}\nAnswer:"}
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
             "Sort this word list by spelling: {words}\nAnswer:"],
    "rotate": ["Move the first word to the end: {words}\nAnswer:",
               "Shift the words one place to the left, wrapping around: {words}\nOutput:",
               "Start from the second word and finish with the first: {words}\nResult:",
               "Rotate this word list by one: {words}\nAnswer:"],
    "sort_desc": ["Arrange the words from Z to A: {words}\nAnswer:",
                  "List these words in the opposite of dictionary order: {words}\nOutput:",
                  "Order the words alphabetically, last letter of the alphabet first: {words}\nResult:",
                  "Sort this word list backwards by spelling: {words}\nAnswer:"]}
MODES = ("reverse", "copy", "sort", "rotate", "sort_desc")


def pool_words(pool: int | None) -> tuple[str, ...]:
    """:data:`WORDS` for ``None``; else the ``pool``-th of :data:`N_POOLS` disjoint 16-word pools."""
    if pool is None:
        return WORDS
    return (WORDS + EXTRA_WORDS)[pool::N_POOLS]


@dataclass(frozen=True)
class WordOrderSkill:
    """Reverse (``mode=reverse``), repeat (``copy``), sort alphabetically (``sort``) or backwards (``sort_desc``),
    or move the first word to the end (``rotate``) of ``n_words`` distinct words from the first ``vocab_size``
    words of pool ``pool`` (:func:`pool_words`). Every mode's answer depends on the input's content."""

    name: str
    n_words: int = 3
    vocab_size: int | None = None  # all of the pool's words
    mode: str = "reverse"
    test_size: int = 1000
    val_size: int = 300
    split_seed: int = 0
    prompt_template: str = DEFAULT_PROMPT
    pool: int | None = None

    def __post_init__(self) -> None:
        key = f"skill.tasks.{self.name}"
        if self.mode not in MODES:
            raise ConfigError(f"{key}.mode", f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}.")
        if self.pool is not None and not 0 <= self.pool < N_POOLS:
            raise ConfigError(f"{key}.pool", f"must be in [0, {N_POOLS}) or null, got {self.pool}.")
        available = len(pool_words(self.pool))
        if not 2 <= self.n_vocab <= available:
            raise ConfigError(f"{key}.vocab_size", f"must be in [2, {available}], got {self.vocab_size}.")
        if not 1 <= self.n_words <= self.n_vocab:
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

    @property
    def n_vocab(self) -> int:
        return len(pool_words(self.pool)) if self.vocab_size is None else self.vocab_size

    def _count(self) -> int:
        count = 1
        for i in range(self.n_words):
            count *= self.n_vocab - i
        return count

    def _tuples(self) -> list[tuple[str, ...]]:
        return _shuffled_tuples(pool_words(self.pool)[: self.n_vocab], self.n_words, self.split_seed)

    def answer(self, words: Sequence[str]) -> list[str]:
        return {"reverse": lambda: list(reversed(words)), "copy": lambda: list(words), "sort": lambda: sorted(words),
                "sort_desc": lambda: sorted(words, reverse=True),
                "rotate": lambda: [*words[1:], *words[:1]]}[self.mode]()

    def example(self, words: Sequence[str], template: str | None = None) -> SkillExample:
        out = self.answer(words)
        prompt = (template or self.prompt_template).format(words=" ".join(words))
        return SkillExample(prompt, " " + " ".join(out), " ".join(out))

    def worded(self, split: str, wording: str) -> list[SkillExample]:
        """The ``split``'s problems in one of :data:`WORDINGS`: ``template`` (as :meth:`split`), ``paraphrase``
        (as :meth:`router_prompts`: the held-out wording on ``test``) or ``content`` (:data:`CONTENT_FRAME`)."""
        tuples = self._split_tuples(split)
        if wording == "template":
            return [self.example(t) for t in tuples]
        if wording == "content":
            return [self.example(t, CONTENT_FRAME) for t in tuples]
        if wording == "paraphrase":
            if split == "test":
                return [self.example(t, PARAPHRASES[self.mode]) for t in tuples]
            wordings = TRAIN_PARAPHRASES[self.mode]
            return [self.example(t, wordings[i % len(wordings)]) for i, t in enumerate(tuples)]
        raise ValueError(f"unknown wording {wording!r}; use one of {WORDINGS}")

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
        return [ex.prompt for ex in self.worded(split, "paraphrase")]

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


@functools.lru_cache(maxsize=16)
def _shuffled_tuples(words: tuple[str, ...], n_words: int, seed: int) -> list[tuple[str, ...]]:
    """Every ordered tuple of distinct words, shuffled; cached because every split call needs it."""
    tuples = list(itertools.permutations(words, n_words))
    random.Random(seed).shuffle(tuples)
    return tuples


def build_reverse(name: str, spec: Mapping[str, Any]) -> WordOrderSkill:
    """A :class:`WordOrderSkill` from a ``skill.tasks`` entry."""
    known = {"n_words", "vocab_size", "mode", "test_size", "val_size", "split_seed", "prompt_template", "pool"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"skill.tasks.{name}", f"unknown keys {unknown}; allowed: {sorted(known)}.")
    kwargs = {k: (str(v) if k in ("mode", "prompt_template") else None if v is None else int(v))
              for k, v in spec.items()}
    return WordOrderSkill(name=name, **kwargs)
