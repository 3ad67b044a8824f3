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

from freeal_ray.prompt_fit import answer_room


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    max_model_len: int = 2048
    dtype: str = "auto"  # `engine_dtype` resolves it where the engine is built (ray.data.llm: on the driver)
    kv_cache_gib: float = 2.0  # CPU only: memory for the KV cache
    cpu_threads: int = 0  # CPU only: compute threads; 0 is every core this process may run on ...
    cpu_share: int = 1  # ... split between this many engines (llm.replicas), so they do not oversubscribe a node
    tensor_parallel_size: int = 1
    use_gpu: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict)  # passed to vllm.LLM as is
    # openai engine: model_path is the served model's name
    api_base: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    requests_per_minute: int = 0
    max_retries: int = 6
    api_style: str = "chat"  # or completions
    unconstrained: str = "fail"  # or parse: see openai_engine.py


@dataclass(frozen=True)
class Choice:
    """One constrained answer: the index into the choices (None: abstained) and its probability."""

    index: int | None
    confidence: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Extraction:
    """One structured answer: JSON text in the schema asked for, and its token counts."""

    text: str
    prompt_tokens: int
    output_tokens: int


# Nucleus cut for sampled writing (free text and JSON alike); vLLM ignores it for greedy calls.
TOP_P = 0.95


class Engine(ABC):
    @abstractmethod
    def choose(self, prompts: Sequence[str], choices: Sequence[str]) -> list[Choice]:
        """For each prompt, the answer among `choices` and the model's probability of it."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Free text, one completion a prompt, cut before the first of `stop`."""

    @abstractmethod
    def extract(self, prompts: Sequence[str], schema: dict, max_tokens: int, temperature: float = 0.0) -> list[Extraction]:
        """For each prompt, an answer constrained to the JSON `schema` (entity lists): greedy for
        annotation, sampled at `temperature` for writing, where the same prompt asks for new text."""


class VLLMEngine(Engine):
    """vLLM's offline engine, with answers constrained by structured outputs."""

    def __init__(self, config: EngineConfig):
        if not config.use_gpu:
            # In-process engine: a Ray actor is already the process boundary we want.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(config.kv_cache_gib))))
            self.threads = use_cpu_threads(config.cpu_threads, config.cpu_share)
        from vllm import LLM

        defaults = {"enable_prefix_caching": True}  # every prompt of a stage shares its header
        if not config.use_gpu:
            # No torch.compile on a CPU: on a 2-core EPYC it added 50 s to every engine start (0.5B: 70 s
            # against 17 s) and the compiled engine answered no faster (4.70 vs 4.65 rows/s).
            defaults["compilation_config"] = 0
        self._llm = LLM(
            model=config.model_path,
            max_model_len=config.max_model_len,
            dtype=engine_dtype(config.dtype, config.use_gpu),
            tensor_parallel_size=config.tensor_parallel_size,
            seed=config.seed,
            **{**defaults, **config.extra},
        )

    @staticmethod
    def choice_params(choices):
        """Greedy, constrained to `choices`, with the answer's log-probs for its confidence, and
        room for the longest choice whatever its length (a verbalizer may be a phrase)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=0.0,
            max_tokens=answer_room(choices),
            logprobs=1,
            structured_outputs=StructuredOutputsParams(choice=list(choices)),
        )

    def _generate(self, prompts, params):
        return in_prefix_order(prompts, lambda ordered: self._llm.generate(ordered, params, use_tqdm=False))

    def choose(self, prompts, choices):
        return [_to_choice(out, choices) for out in self._generate(prompts, self.choice_params(choices))]

    def extract(self, prompts, schema, max_tokens, temperature=0.0):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(temperature=temperature, top_p=TOP_P, max_tokens=max_tokens,
                                structured_outputs=StructuredOutputsParams(json=schema))
        outputs = self._generate(prompts, params)
        return [Extraction(o.outputs[0].text, len(o.prompt_token_ids or ()), len(o.outputs[0].token_ids)) for o in outputs]

    def generate(self, prompts, max_tokens, temperature, stop=("\n",)):
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=temperature,
            top_p=TOP_P,
            max_tokens=max_tokens,
            min_tokens=2,
            stop=list(stop),
            # no per-request seed: vLLM-CPU cannot offset a request's generator across a chunked
            # prefill ("CPU Generator does not use offset"); the engine-level seed still applies
        )
        return [out.outputs[0].text.strip() for out in self._generate(prompts, params)]


def use_cpu_threads(threads: int = 0, share: int = 1) -> int:
    """Give this process's torch (the in-process CPU engine) `threads` compute threads, 0 meaning
    every core it may run on divided by `share`; returns the count.

    Ray sets OMP_NUM_THREADS to an actor's `num_cpus`, so the engine actor (one logical CPU, which
    keeps the other stages schedulable) computed on one core of two. vLLM's CPU worker turns
    `torch.set_num_threads` into a no-op once it starts, so this must run before the engine is built."""
    import torch

    n = threads if threads > 0 else max(1, len(os.sched_getaffinity(0)) // max(1, share))
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def engine_dtype(dtype: str, use_gpu: bool, cpu_flags: set[str] | None = None, speed: dict | None = None) -> str:
    """The dtype to hand vLLM: `dtype` unless it is "auto".

    On a GPU, "auto" is the model's own (bfloat16 for the presets). On a CPU without native
    bfloat16 (AVX512-BF16, AMX, Arm BF16) it is float32: torch emulates bfloat16 there, and a
    1024x1024 bfloat16 matmul ran about 70x slower than float32 on an AVX2-only EPYC. With the
    flag, bfloat16 where this CPU measured it faster than float32 (cpu_speed.py; `speed` gives the
    figures instead): on a Xeon whose hypervisor hides AMX the two matmuls ran alike, and vLLM ran
    the 1.5B 1.38x faster in float32 (docs/benchmarks.md)."""
    if dtype != "auto" or use_gpu:
        return dtype
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if not has_native_bf16(flags):
        return "float32"
    if speed is None:
        from freeal_ray.cpu_speed import matmul_gflops

        speed = matmul_gflops(flags)
    return "bfloat16" if speed["bfloat16"] > speed["float32"] else "float32"


def has_native_bf16(flags: set[str]) -> bool:
    """Whether a CPU with these feature flags computes bfloat16 natively (x86 AVX512-BF16 or AMX, Arm BF16)."""
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cpu_flags() -> set[str]:
    """This machine's CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def in_prefix_order(prompts: Sequence[str], run) -> list:
    """`run(sorted prompts)`, with its answers put back in the order of `prompts`.

    Sorted, prompts that share demos sit next to each other, so vLLM's prefix cache still holds
    a prompt's shared blocks when the next one is scheduled instead of having evicted them."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    answers = run([prompts[i] for i in order])
    restored = [None] * len(order)
    for answer, i in zip(answers, order):
        restored[i] = answer
    return restored


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


class InstantEngine(Engine):
    """No model: answers at once, from a hash of the prompt. For measuring the pipeline around
    the LLM (bench/scale.py) and for dry runs of a config; its labels mean nothing."""

    def __init__(self, config: EngineConfig):
        self.config = config

    def choose(self, prompts, choices):
        import zlib

        return [
            Choice(zlib.crc32(p.encode()) % len(choices), 1.0, len(p.split()), 1) for p in prompts
        ]

    def generate(self, prompts, max_tokens, temperature, stop=("\n",)):
        """The prompt's last words, shuffled by its hash: a different text per prompt that copies no
        corpus row it shows (demo synthesis drops copies)."""
        import random
        import zlib

        out = []
        for p in prompts:
            words = p.split()[-max_tokens:-1] or ["text"]
            random.Random(zlib.crc32(p.encode())).shuffle(words)
            out.append(" ".join(words))
        return out

    def extract(self, prompts, schema, max_tokens, temperature=0.0):
        """One entity per answer: a word of the prompt's last input line, of a type picked by the
        hash; a synthesis schema also gets that line's words back, shuffled by the hash, as the
        written sentence (a new sentence, not a copy of the one shown)."""
        import json
        import random
        import zlib

        types = schema["properties"]["entities"]["items"]["properties"]["type"]["enum"]
        out = []
        for p in prompts:
            lines = [line.split(": ", 1)[1] for line in p.splitlines()[:-1] if line.split(": ", 1)[0].isalpha()]
            words = [w for w in (lines[-1] if lines else "").split() if w.isalpha()]
            h = zlib.crc32(p.encode())
            entities = [{"text": words[h % len(words)], "type": types[h % len(types)]}] if words else []
            if "sentence" in schema["properties"] and lines:
                written = lines[-1].split()
                random.Random(h).shuffle(written)
                answer = {"sentence": " ".join(written), "entities": entities}
            else:
                answer = {"entities": entities}
            out.append(Extraction(json.dumps(answer), len(p.split()), 8))
        return out
