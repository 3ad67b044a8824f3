"""The `ray_data_llm` runner: rows reach vLLM through `ray.data.llm` (the GPU cluster default).

Ray's vLLM processor places `replicas` engines of `tensor_parallel_size` GPUs each and streams
batches through them, so a GPU cluster is used as a whole. Unlike the `actors` runner, each
stage starts its own engines: a GPU loads a model in seconds, a CPU in minutes, which is why
CPU runs keep the long-lived engine actors of `annotation.py`. On a CPU node this runner still
works (one CPU bundle per replica), which is how the tests run it.

Everything here is plain functions of `LLMSettings`; `ray.data.llm` is imported only inside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import ray

from freeal_ray.engines import TOP_P, engine_dtype
from freeal_ray.prompt_fit import answer_room


def processor_config(settings, batch_size: int | None = None):
    """`vLLMEngineProcessorConfig` from the run's settings: TP and replicas from the config."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine = settings.engine_config
    engine_kwargs = dict(
        max_model_len=engine.max_model_len,
        dtype=engine_dtype(engine.dtype, engine.use_gpu),
        tensor_parallel_size=engine.tensor_parallel_size,
        seed=engine.seed,
        enable_prefix_caching=True,
    )
    if not engine.use_gpu:
        # as the engine actors (see engines.VLLMEngine); a dict, since engine args do not take LLM's bare level
        engine_kwargs["compilation_config"] = {"mode": 0}
    engine_kwargs.update(engine.extra)
    options = dict(
        model_source=engine.model_path,
        engine_kwargs=engine_kwargs,
        batch_size=batch_size or settings.batch_size,
        concurrency=settings.replicas,
        chat_template_stage=False,  # prompts are plain few-shot text, already final
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )
    if not engine.use_gpu:
        # Ray's processor asks for a GPU per engine unless told what a replica needs instead.
        options["placement_group_config"] = {"bundles": [{"CPU": 1}] * engine.tensor_parallel_size}
        options["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(engine.kv_cache_gib)))}}
    return vLLMEngineProcessorConfig(**options)


def choose_labels(prompts: ray.data.Dataset, settings, choices: Sequence[str]) -> ray.data.Dataset:
    """Each row's `prompt` answered with one of `choices`: adds `choice` (index or -1),
    `confidence`, `prompt_tokens`, `output_tokens`; every other column passes through."""
    from ray.data.llm import build_processor

    choices = list(choices)
    sampling = dict(temperature=0.0, max_tokens=answer_room(choices), logprobs=1, structured_outputs={"choice": choices})

    def ask(row: dict) -> dict:
        return {**row, "sampling_params": sampling}

    def answer(row: dict) -> dict:
        index, confidence = parse_choice(row["generated_text"], row.get("generated_tokens"), row.get("logprobs"), choices)
        # list columns (demo_ids) come back as arrays, which Arrow would store pickled
        kept = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in row.items() if k not in _ENGINE_COLUMNS}
        return {**kept, "choice": index, "confidence": confidence,
                "prompt_tokens": int(row.get("num_input_tokens") or 0),
                "output_tokens": int(row.get("num_generated_tokens") or 0)}

    processor = build_processor(processor_config(settings), preprocess=ask, postprocess=answer)
    return processor(prompts)


def generate_texts(prompts: list[str], settings, max_tokens: int, temperature: float, stop: Sequence[str]) -> list[str]:
    """Free text for each prompt, in order (round-0 demo synthesis)."""
    from ray.data.llm import build_processor

    sampling = dict(temperature=temperature, top_p=TOP_P, max_tokens=max_tokens, min_tokens=2, stop=list(stop))
    processor = build_processor(
        processor_config(settings),
        preprocess=lambda row: {"order": row["order"], "prompt": row["prompt"], "sampling_params": sampling},
        postprocess=lambda row: {"order": row["order"], "text": row["generated_text"].strip()},
    )
    frame = pd.DataFrame({"order": range(len(prompts)), "prompt": prompts})
    out = processor(ray.data.from_pandas(frame)).to_pandas().sort_values("order")
    return out["text"].tolist()


def parse_choice(text: str, token_ids, logprobs, choices: Sequence[str]) -> tuple[int, float]:
    """The answer's index among `choices` (-1: none) and its probability under the model: the
    product of its tokens' raw probabilities, as the `actors` runner computes it."""
    index = next((i for i, c in enumerate(choices) if c.strip() == (text or "").strip()), -1)
    if index < 0:
        return -1, 0.0
    if token_ids is None or logprobs is None:
        return index, 1.0
    total = 0.0
    for token, step in zip(list(token_ids), list(logprobs)):
        entry = _lookup(step, token)
        if entry is not None:
            total += float(entry["logprob"] if isinstance(entry, dict) else entry)
    return index, math.exp(total)


def _lookup(step, token):
    """A token's entry in one step's logprobs, whichever way Arrow stored the dict's keys."""
    if not step:
        return None
    if isinstance(step, dict):
        return step.get(token, step.get(str(token)))
    return None


_ENGINE_COLUMNS = {
    "sampling_params", "generated_text", "generated_tokens", "num_generated_tokens", "num_input_tokens",
    "prompt_token_ids", "logprobs", "prompt_logprobs", "metrics", "embeddings", "time_taken_llm",
    "batch_uuid", "request_id", "params", "prompt",
}
