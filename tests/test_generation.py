"""Batched, left-padded generation must reproduce the unpadded one-prompt-at-a-time reference."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from grafting.generation import cut_at_eos, generate_continuations, generate_one_by_one

PROMPTS = [
    "The cat",
    "A small bird follows the long road near the park and then",
    "My friend",
    "Our team builds a red ball",
    "The old man reads many books in the morning while the",
]


def _sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subj = [
        "the cat",
        "a dog",
        "my friend",
        "the teacher",
        "our team",
        "the river",
        "a small bird",
        "the old man",
    ]
    verb = ["sees", "likes", "builds", "finds", "paints", "carries", "follows", "reads"]
    obj = ["a red ball", "the green house", "many books", "an apple", "the long road", "a quiet song"]
    tail = [
        "today.",
        "in the morning.",
        "after lunch.",
        "with great care.",
        "again and again.",
        "near the park.",
    ]
    return [
        f"{rng.choice(subj).capitalize()} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}"
        for _ in range(n)
    ]


def build_tiny_tokenizer(with_pad: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on generated sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_sentences(), trainer)
    kwargs = {"pad_token": "<|pad|>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", **kwargs)


def build_tiny_gptneox(vocab_size: int, seed: int = 0) -> GPTNeoXForCausalLM:
    # A large init spreads the logits, so greedy argmaxes are never near-ties that float noise
    # from different padded shapes could flip.
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> GPTNeoXForCausalLM:
    return build_tiny_gptneox(len(tokenizer))


def test_prompts_have_different_lengths(tokenizer: PreTrainedTokenizerFast) -> None:
    lengths = {len(tokenizer(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) >= 4


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_batched_greedy_matches_one_by_one(model, tokenizer, batch_size: int) -> None:
    ref = generate_one_by_one(model, tokenizer, PROMPTS, max_new_tokens=12)
    got = generate_continuations(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size)
    assert got == ref
    assert all(len(text) > 0 for text in ref)


def test_right_padding_would_break_the_comparison(model, tokenizer) -> None:
    """Shows the equivalence test has teeth: naive right padding gives different continuations."""
    ref = generate_one_by_one(model, tokenizer, PROMPTS, max_new_tokens=12)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
    finally:
        tokenizer.padding_side = old_side
    new = out[:, enc["input_ids"].shape[1] :]
    wrong = [tokenizer.decode(row, skip_special_tokens=True) for row in new]
    assert wrong != ref


def test_output_is_cut_at_first_eos(model, tokenizer) -> None:
    # Declare a token the model really emits (mid-continuation) as EOS: both paths must stop there.
    prompt = PROMPTS[1]
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        full = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = full[0, enc["input_ids"].shape[1] :].tolist()
    stop_at = next(i for i in range(1, len(new)) if new[i] not in new[:i])
    stop_id = new[stop_at]
    expected = tokenizer.decode(new[:stop_at], skip_special_tokens=True)
    prompts = [prompt, PROMPTS[0]]
    batched = generate_continuations(model, tokenizer, prompts, max_new_tokens=12, eos_token_id=stop_id)
    single = generate_one_by_one(model, tokenizer, prompts, max_new_tokens=12, eos_token_id=stop_id)
    assert batched[0] == expected
    assert batched == single


def test_restores_model_and_tokenizer_state(model, tokenizer) -> None:
    tok = build_tiny_tokenizer(with_pad=False)
    assert tok.pad_token is None
    model.train()
    try:
        out = generate_continuations(model, tok, PROMPTS[:3], max_new_tokens=4, batch_size=3)
        assert model.training
        assert tok.padding_side == "right"
        assert tok.pad_token is None
        # Padding with EOS must still match the unpadded reference.
        assert out == generate_one_by_one(model, tok, PROMPTS[:3], max_new_tokens=4)
    finally:
        model.eval()


def test_cut_at_eos() -> None:
    assert cut_at_eos([5, 6, 0, 7, 0], {0}) == [5, 6]
    assert cut_at_eos([5, 6], {0}) == [5, 6]
    assert cut_at_eos([9, 5], {0, 9}) == []
