"""Free text from the run's engines (EvoKD's analyses and examples, round-0 demos) and JSON answers
(written NER sentences), with the tokens each call spent: the engines' generate answers text
alone, so tokens are counted here with the model's own tokenizer (None for an endpoint's model,
whose tokenizer is not at hand)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ray
from tqdm.auto import tqdm

from freeal_ray.engine_actors import LLMSettings, engine_pool


@dataclass
class Written:
    texts: list[str]
    prompt_tokens: list[int | None]
    output_tokens: list[int | None]


def chat_template(settings: LLMSettings):
    """The model's chat template as a function of messages, or None (plain text prompts) where the
    run's prompt style is plain or the model is not a local folder."""
    if settings.prompt_style == "plain" or settings.engine != "vllm":
        return None
    from freeal_ray.prompts import chat_renderer

    return chat_renderer(settings.engine_config.model_path)


def on_engines(method: str, prompts: Sequence[str], settings: LLMSettings, *args, desc: str, unit: str = "call") -> list:
    """`method` of the run's engine actors (generate, extract) over `prompts` in batches of
    llm.batch_size, spread over the engines; one answer a prompt, in order."""
    engines = engine_pool(settings)
    step = settings.batch_size
    calls = [getattr(engines[(i // step) % len(engines)], method).remote(list(prompts[i : i + step]), *args)
             for i in range(0, len(prompts), step)]
    answers: list = []
    with tqdm(total=len(prompts), desc=desc, unit=unit) as bar:
        for call in calls:  # in submission order, which is the order each engine works in
            chunk = ray.get(call)
            answers += chunk
            bar.update(len(chunk))
    return answers


def write(prompts: Sequence[str], settings: LLMSettings, max_tokens: int, temperature: float,
          stop: Sequence[str] = ("\n",), desc: str = "LLM writing") -> Written:
    texts = [str(t).strip() for t in on_engines("generate", prompts, settings, max_tokens, temperature, list(stop), desc=desc)]
    count = _token_counter(settings)
    return Written(texts, [count(p) for p in prompts], [count(t) for t in texts])


def extract(prompts: Sequence[str], settings: LLMSettings, schema: dict, max_tokens: int, desc: str, unit: str = "call",
            temperature: float = 0.0) -> list:
    """Answers constrained to the JSON `schema`, greedy unless a `temperature` is given, one a prompt,
    in order (engines' Extractions, which carry their own token counts)."""
    return on_engines("extract", prompts, settings, schema, max_tokens, temperature, desc=desc, unit=unit)


def _token_counter(settings: LLMSettings):
    if settings.engine != "vllm":
        return lambda text: None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.engine_config.model_path)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
