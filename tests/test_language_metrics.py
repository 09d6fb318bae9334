"""Language-preservation metrics, each checked against an independent reference computation."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.implementations import BertWordPieceTokenizer
from torch import nn
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerFast,
)

from grafting.metrics.language import (
    mlm_predictability,
    mlm_predictability_naive,
    next_token_kl,
    token_perplexity,
    word_entropy_perplexity,
)

SUBJ = [
    "the cat",
    "a dog",
    "my friend",
    "the teacher",
    "our team",
    "the river",
    "a small bird",
    "the old man",
]
VERB = ["sees", "likes", "builds", "finds", "paints", "carries", "follows", "reads", "remembers"]
OBJ = ["a red ball", "the green house", "many books", "an apple", "the long road", "a quiet song"]
TAIL = [
    "today.",
    "in the morning.",
    "after lunch, slowly.",
    "with great care!",
    "near the park?",
    "tomorrow.",
]


def _sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)} {rng.choice(TAIL)}" for _ in range(n)]


TEXTS = [
    "The cat sees a red ball today.",
    "My friend remembers the long road near the park? The teacher paints many books, slowly.",
    "",
    "A small bird follows an apple with great care!",
    "Our team carries the green house tomorrow. The river likes a quiet song in the morning.",
    "!!! ...",
]


# ---------------------------------------------------------------- word-entropy perplexity


def _entropy_reference(text: str) -> float:
    # Independent algebra: H = log2 N - (1/N) sum_w c_w log2 c_w, words split by hand.
    words = "".join(ch if ch.isalnum() or ch == "_" else " " for ch in text.lower()).split()
    if not words:
        return 1.0
    n = len(words)
    return 2 ** (math.log2(n) - sum(c * math.log2(c) for c in Counter(words).values()) / n)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1.0),
        ("?!. ,", 1.0),
        ("word word word", 1.0),
        ("The the THE.", 1.0),
        ("one two three four", 4.0),
        ("a a b b", 2.0),
        ("x, y; z!", 3.0),
    ],
)
def test_word_entropy_simple_cases(text: str, expected: float) -> None:
    assert word_entropy_perplexity(text) == pytest.approx(expected)


@given(
    st.lists(
        st.sampled_from(["alpha", "beta", "Gamma", "delta", "x1", "y_2", ".", ",", " ", "\n"]), max_size=40
    )
)
def test_word_entropy_matches_reference(tokens: list[str]) -> None:
    text = " ".join(tokens)
    p = word_entropy_perplexity(text)
    assert p == pytest.approx(_entropy_reference(text))
    distinct = len({t.lower() for t in tokens if t.strip(" \n.,")})
    assert 1.0 - 1e-9 <= p <= max(distinct, 1) + 1e-9


# ---------------------------------------------------------------- MLM predictability


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT + WordPiece tokenizer, saved locally like a hub checkpoint."""
    wp = BertWordPieceTokenizer(lowercase=True)
    # A small vocabulary leaves some words split into several pieces.
    wp.train_from_iterator(_sentences(), vocab_size=150, min_frequency=1)
    tok = BertTokenizerFast(vocab=wp.get_vocab())
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert(bert_dir: Path) -> tuple[nn.Module, PreTrainedTokenizerFast]:
    return AutoModelForMaskedLM.from_pretrained(bert_dir).float(), AutoTokenizer.from_pretrained(bert_dir)


def test_tiny_bert_loads_from_local_path(bert) -> None:
    model, tok = bert
    assert isinstance(model, BertForMaskedLM)
    enc = tok("the cat sees a quietly remembered song")
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert any(p.startswith("##") for p in pieces)  # multi-piece words exist, so both modes differ


@pytest.mark.parametrize("multi_piece", ["skip", "first_piece"])
@pytest.mark.parametrize("skip_punctuation", [True, False])
def test_mlm_batched_matches_naive(bert, multi_piece: str, skip_punctuation: bool) -> None:
    model, tok = bert
    kwargs = dict(top_k=40, multi_piece=multi_piece, skip_punctuation=skip_punctuation)
    ref = mlm_predictability_naive(TEXTS, model, tok, **kwargs)
    assert 0.0 < ref <= 1.0
    for batch_size in (5, 64):  # 5: batches mixing texts and lengths, with a ragged last batch
        got = mlm_predictability(TEXTS, model, tok, batch_size=batch_size, **kwargs)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_mlm_options_change_the_score(bert) -> None:
    model, tok = bert
    scores = {
        (mp, sp): mlm_predictability(TEXTS, model, tok, top_k=40, multi_piece=mp, skip_punctuation=sp)
        for mp in ("skip", "first_piece")
        for sp in (True, False)
    }
    assert len(set(scores.values())) > 1
    assert math.isnan(mlm_predictability(["", "!!!"], model, tok))
    model.train()
    mlm_predictability(TEXTS[:1], model, tok)
    assert model.training  # training flag restored
    model.eval()


class _FixedLogitsMLM(nn.Module):
    """Stub MLM whose prediction at every position is the same fixed distribution."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fixed", logits)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.fixed.expand(*input_ids.shape, -1).clone())


def test_mlm_aggregation_against_hand_reference(bert) -> None:
    _, tok = bert
    vocab = tok.get_vocab()
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(tok), generator=gen)
    logits[vocab["."]] = logits.max() + 1.0  # punctuation is always retrieved when it is scored
    top_k = 15
    top = set(logits.topk(top_k).indices.tolist())
    probs = logits.softmax(-1)
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and tok.tokenize(w) == [w])
    hits = [w for w in words if vocab[w] in top]
    misses = [w for w in words if vocab[w] not in top]
    assert len(hits) >= 3 and len(misses) >= 3
    texts = [
        f"{hits[0]} {misses[0]} {hits[1]}",
        f"{misses[1]} {misses[2]}",  # nothing retrieved: left out of the mean, not counted as 0
        f"{hits[2]} . {hits[0]}",
    ]
    p = {w: probs[vocab[w]].item() for w in hits + ["."]}
    stub = _FixedLogitsMLM(logits)
    expected = ((p[hits[0]] + p[hits[1]]) / 2 + (p[hits[2]] + p[hits[0]]) / 2) / 2
    expected_punct = ((p[hits[0]] + p[hits[1]]) / 2 + (p[hits[2]] + p["."] + p[hits[0]]) / 3) / 2
    for fn in (mlm_predictability, mlm_predictability_naive):
        assert fn(texts, stub, tok, top_k=top_k) == pytest.approx(expected)
        assert fn(texts, stub, tok, top_k=top_k, skip_punctuation=False) == pytest.approx(expected_punct)
        assert math.isnan(fn([texts[1]], stub, tok, top_k=top_k))


class _RecordingMLM(_FixedLogitsMLM):
    """Stub that also records every (unpadded) input it is given."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__(torch.zeros(vocab_size))
        self.seen: list[list[int]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, mask, strict=True)]
        return super().forward(input_ids, attention_mask)


@pytest.mark.parametrize("fn", [mlm_predictability, mlm_predictability_naive])
def test_mlm_masks_whole_words(bert, fn) -> None:
    _, tok = bert
    long_word = next(w for w in ["remembers", "carries", "teacher", "quiet"] if len(tok.tokenize(w)) > 1)
    n_pieces = len(tok.tokenize(long_word))
    text = f"the {long_word} cat, slowly"
    original = tok(text)["input_ids"]
    slowly = len(tok.tokenize("slowly"))
    # Pieces masked per scored word; "," is punctuation and never scored.
    expected = {
        "skip": [n for n in [1, n_pieces, 1, slowly] if n == 1],
        "first_piece": sorted([1, n_pieces, 1, slowly]),
    }
    for mode in ("skip", "first_piece"):
        stub = _RecordingMLM(len(tok))
        fn([text], stub, tok, top_k=len(tok), multi_piece=mode)
        masked_counts = []
        for ids in stub.seen:
            assert len(ids) == len(original)
            changed = [i for i, (a, b) in enumerate(zip(ids, original, strict=True)) if a != b]
            assert all(ids[i] == tok.mask_token_id for i in changed)
            assert changed == list(range(changed[0], changed[-1] + 1))  # one contiguous word
            masked_counts.append(len(changed))
        assert sorted(masked_counts) == expected[mode]


# ---------------------------------------------------------------- causal-LM metrics


@pytest.fixture(scope="module")
def causal_tok() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_sentences(), trainer)
    # No pad token, like Pythia's tokenizer: the metrics must pad with EOS themselves.
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _causal(vocab: int, seed: int) -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).float().eval()


CAUSAL_TEXTS = [t for t in TEXTS if len(t) > 3] + ["Hi", "the cat sees the cat sees the cat sees the cat"]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_token_perplexity_matches_per_text_hf_loss(causal_tok, batch_size: int) -> None:
    model = _causal(len(causal_tok), 0)
    total, count = 0.0, 0
    with torch.no_grad():
        for text in CAUSAL_TEXTS:
            ids = causal_tok(text, return_tensors="pt")["input_ids"]
            if ids.shape[1] < 2:
                continue
            loss = model(input_ids=ids, labels=ids).loss.item()  # HF's own shifted mean NLL
            total += loss * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    expected = math.exp(total / count)
    causal_tok.padding_side = "left"  # a caller's setting must neither leak in nor be lost
    try:
        got = token_perplexity(model, causal_tok, CAUSAL_TEXTS, batch_size=batch_size)
    finally:
        assert causal_tok.padding_side == "left" and causal_tok.pad_token is None
        causal_tok.padding_side = "right"
    assert got == pytest.approx(expected, rel=1e-5)
    assert 1.0 < got < 10 * len(causal_tok)


def test_token_perplexity_truncates(causal_tok) -> None:
    model = _causal(len(causal_tok), 0)
    long_text = " ".join(_sentences(20))
    short = causal_tok.decode(causal_tok(long_text)["input_ids"][:8])
    assert token_perplexity(model, causal_tok, [long_text], max_length=8) == pytest.approx(
        token_perplexity(model, causal_tok, [short])
    )


def _kl_reference(model_p: nn.Module, model_q: nn.Module, sequences: list[torch.Tensor]) -> float:
    # Unpadded sequences, one at a time, with torch.distributions: no masking code shared.
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in sequences:
            p = torch.distributions.Categorical(logits=model_p(input_ids=ids[None]).logits[0].double())
            q = torch.distributions.Categorical(logits=model_q(input_ids=ids[None]).logits[0].double())
            kl = torch.distributions.kl_divergence(p, q)
            total += kl.sum().item()
            count += kl.numel()
    return total / count


def _right_padded(
    tok: PreTrainedTokenizerFast, texts: list[str]
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    seqs = [tok(t, return_tensors="pt")["input_ids"][0] for t in texts]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.eos_token_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return seqs, ids, mask


def test_next_token_kl(causal_tok) -> None:
    p, q = _causal(len(causal_tok), 0), _causal(len(causal_tok), 1)
    seqs, ids, mask = _right_padded(causal_tok, CAUSAL_TEXTS)
    assert len({len(s) for s in seqs}) > 2
    torch.testing.assert_close(next_token_kl(p, p, ids, mask), 0.0, rtol=0, atol=1e-7)
    kl = next_token_kl(p, q, ids, mask)
    assert kl > 1e-3
    assert kl == pytest.approx(_kl_reference(p, q, seqs), rel=1e-4)
    assert next_token_kl(q, p, ids, mask) == pytest.approx(_kl_reference(q, p, seqs), rel=1e-4)
    with pytest.raises(ValueError, match="vocab"):
        next_token_kl(p, _causal(len(causal_tok) + 8, 0), ids, mask)


def test_mlm_truncates_texts_to_the_models_positions(bert) -> None:
    """A text longer than the scorer's position table is cut to it (the shipped tiny BERT has 64)."""
    model, tok = bert
    long_text = " ".join(TEXTS) * 20
    assert len(tok(long_text)["input_ids"]) > model.config.max_position_embeddings
    got = mlm_predictability([long_text], model, tok, top_k=40)
    ref = mlm_predictability_naive([long_text], model, tok, top_k=40)
    assert 0.0 < got <= 1.0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_per_text_values_for_the_interval(causal_tok, bert) -> None:
    """Each metric's per-text values (what the interval's item variance is computed from) against one text at a time."""
    model, other = _causal(len(causal_tok), 0), _causal(len(causal_tok), 1)
    texts = [t for t in CAUSAL_TEXTS if len(causal_tok(t)["input_ids"]) >= 2]
    nll: list[float] = []
    token_perplexity(model, causal_tok, texts, batch_size=3, per_text=nll)
    alone = [math.log(token_perplexity(model, causal_tok, [t])) for t in texts]
    assert nll == pytest.approx(alone, rel=1e-5)
    seqs, ids, mask = _right_padded(causal_tok, texts)
    rows: list[float] = []
    next_token_kl(model, other, ids, mask, per_text=rows)
    assert rows == pytest.approx([_kl_reference(model, other, [s]) for s in seqs], rel=1e-4)
    _, tok = bert
    stub = _FixedLogitsMLM(torch.randn(len(tok), generator=torch.Generator().manual_seed(2)))
    words = ["the cat sat on the mat", "a dog ran", "the the the"]
    per: list[float] = []
    score = mlm_predictability(words, stub, tok, top_k=len(tok), per_text=per)
    assert per == pytest.approx([mlm_predictability([w], stub, tok, top_k=len(tok)) for w in words])
    assert score == pytest.approx(sum(per) / len(per))
