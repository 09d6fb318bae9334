"""(c) Batched, left-padded generation (the language metrics' path) against one prompt at a time."""

from __future__ import annotations

from benchmarks.common import Settings, causal_tokenizer, median_time, prompts, random_model, ratio
from benchmarks.result import Measurement
from grafting.generation import generate_continuations, generate_one_by_one


def run(s: Settings) -> list[Measurement]:
    model = random_model(s.small_model, s.device)
    tokenizer = causal_tokenizer()
    n, prompt_tokens, new_tokens = (8, 16, 8) if s.quick else (32, 32, 32)
    texts = prompts(n, prompt_tokens, tokenizer)
    # min_new_tokens: a random model may emit EOS early; both paths then do the same number of steps.
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    batched_out = generate_continuations(model, tokenizer, texts, batch_size=n, **kwargs)
    single_out = generate_one_by_one(model, tokenizer, texts, **kwargs)
    fast = median_time(lambda: generate_continuations(model, tokenizer, texts, batch_size=n, **kwargs),
                       s.device, s.repeats)
    simple = median_time(lambda: generate_one_by_one(model, tokenizer, texts, **kwargs), s.device, 1, warmup=0)
    same = sum(a == b for a, b in zip(batched_out, single_out, strict=True)) / n
    return [Measurement("c", f"greedy generation, {n} prompts of {prompt_tokens} tokens, {new_tokens} new tokens, "
                             f"{s.small_model}", f"batched (batch {n}, left padding)", fast, "one prompt at a time",
                        simple, ratio=ratio(simple, fast), floor=5.0,
                        extra={"identical_continuations": same})]
