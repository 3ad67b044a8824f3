"""Prompts that fit the model's context, `llm.max_model_len` tokens in all.

A prompt is the instruction, its demos and the row. When they pass the context less the room the
answer needs, the least similar demos go first (they sit at the front, and the nearest demo helps
the answer most), then the row's text is cut at its end. vLLM refuses a whole batch for one prompt
that is too long, so a prompt is never sent that way; the rows that were trimmed are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from freeal_ray.errors import ConfigError

Counter = Callable[[str], int]


def fit_prompt(build: Callable[[Sequence[Any], Sequence], str], demos: Sequence[Any], text: Sequence,
               count: Counter, budget: int) -> tuple[str, int, bool]:
    """The longest prompt `build(demos[k:], text[:n])` of at most `budget` tokens: first drop
    demos from the front (k), then cut the text (n, characters of a string or tokens of a
    sentence). Returns the prompt, the demos dropped and whether the text was cut."""
    prompt = build(demos, text)
    if _fits(prompt, count, budget):
        return prompt, 0, False
    for dropped in range(1, len(demos) + 1):
        prompt = build(demos[dropped:], text)
        if _fits(prompt, count, budget):
            return prompt, dropped, False
    bare = count(build([], text[:0]))
    if bare > budget:
        raise ConfigError(f"llm.max_model_len leaves {budget} tokens for a prompt, and the instruction alone takes "
                          f"{bare}; raise llm.max_model_len or shorten the task's instruction")
    lo, hi = 0, len(text)  # the longest cut that fits: text[:lo] fits, text[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(build([], text[:mid])) <= budget else (lo, mid)
    return build([], text[:lo]), len(demos), True


def _fits(prompt: str, count: Counter, budget: int) -> bool:
    # A token spans at least one byte, so a prompt of fewer bytes than the budget (less a margin
    # for the special tokens a tokenizer adds) fits without being tokenised.
    return len(prompt.encode()) + 4 <= budget or count(prompt) <= budget


def token_counter(model_path: str) -> Counter | None:
    """The model's own token count of a prompt, or None where its tokenizer is not on this
    machine (a hosted model named by the API): such prompts are sent as built."""
    path = Path(model_path)
    if not (path.is_dir() and any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))):
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return lambda prompt: len(tokenizer.encode(prompt))


def answer_room(choices: Sequence[str]) -> int:
    """Tokens a constrained answer may take: the longest choice's bytes and the end-of-sequence
    token. Not its token count: decoding under a constraint may spell a word in smaller pieces
    than the tokenizer would (measured: a 37-token verbalizer answered in more than 39), but no
    token spans less than a byte."""
    return max(len(c.encode()) for c in choices) + 1
