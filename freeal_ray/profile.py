"""The annotator that fits the machine: what `llm.model: auto` and `loop.shots: auto` resolve to.

On GPUs the large defaults. On a CPU the choice follows bench/cpu_profile.py's figures (see
docs/benchmarks.md): the annotator's time per row grows with its size and its prompt length, and
a CPU without native bfloat16 computes in float32 at a fraction of the speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from freeal_ray.engines import _cpu_flags, has_native_bf16


@dataclass(frozen=True)
class AnnotatorProfile:
    model: str
    shots: int
    why: str


GPU_PROFILE = AnnotatorProfile("qwen2.5-coder-1.5b", 10, "a GPU: the largest preset, 10 shots")
BF16_CPU_PROFILE = AnnotatorProfile(
    "qwen2.5-coder-1.5b", 10, "a CPU with native bfloat16: the 1.5B preset, 10 shots (about 1.2 s a row on 2 cores)"
)
FP32_CPU_PROFILE = AnnotatorProfile(
    "qwen2.5-coder-0.5b", 4, "a CPU without native bfloat16 (float32): the 0.5B preset, 4 shots"
)


def annotator_profile(use_gpu: bool, cpu_flags: set[str] | None = None) -> AnnotatorProfile:
    if use_gpu:
        return GPU_PROFILE
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    return BF16_CPU_PROFILE if has_native_bf16(flags) else FP32_CPU_PROFILE


def resolve(model: str, shots: int | None, use_gpu: bool, cpu_flags: set[str] | None = None) -> tuple[str, int, str | None]:
    """(annotator, shots per prompt, why) for the config's `llm.model` and `loop.shots`: "auto"
    and None take the machine's profile; anything given stays as given."""
    profile = annotator_profile(use_gpu, cpu_flags)
    picked_model = profile.model if model == "auto" else model
    picked_shots = shots if shots is not None else (profile.shots if model == "auto" else 10)
    why = profile.why if model == "auto" else None
    return picked_model, picked_shots, why
