"""The annotator that fits the machine: what `llm.model: auto` and `loop.shots: auto` resolve to.

On GPUs the large defaults. On a CPU the choice follows bench/cpu_profile.py's figures (see
docs/benchmarks.md): the annotator's time per row grows with its size and its prompt length.
A CPU without native bfloat16 computes in float32 at a fraction of the speed; one with the flag
may still be slow (a Xeon whose hypervisor hides AMX multiplied at 140 GFLOP/s in either dtype,
and ran the 1.5B at a fifth of an AMD EPYC's speed), so the CPU's measured matmul speed decides
(cpu_speed.py), not its flags alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from freeal_ray.engines import _cpu_flags, has_native_bf16

# GFLOP/s (bfloat16 or float32, the faster) from which the 1.5B with 10 shots runs at about a
# second or two a row on the cores measured; below it a prompt of ~700 tokens takes over 10 s.
FAST_CPU_GFLOPS = 400.0


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


def slow_cpu_profile(gflops: float) -> AnnotatorProfile:
    return AnnotatorProfile("qwen2.5-coder-0.5b", 4, f"a CPU that multiplies at {gflops:.0f} GFLOP/s, under the "
                            f"{FAST_CPU_GFLOPS:.0f} the 1.5B needs for about a second a row: the 0.5B preset, 4 shots")


def annotator_profile(use_gpu: bool, cpu_flags: set[str] | None = None, speed: dict | None = None) -> AnnotatorProfile:
    if use_gpu:
        return GPU_PROFILE
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if not has_native_bf16(flags):
        return FP32_CPU_PROFILE
    if speed is None:
        from freeal_ray.cpu_speed import matmul_gflops

        speed = matmul_gflops(flags)
    best = max(speed.values())
    return BF16_CPU_PROFILE if best >= FAST_CPU_GFLOPS else slow_cpu_profile(best)


def resolve(model: str, shots: int | None, use_gpu: bool, cpu_flags: set[str] | None = None,
            speed: dict | None = None) -> tuple[str, int, str | None]:
    """(annotator, shots per prompt, why) for the config's `llm.model` and `loop.shots`: "auto"
    and None take the machine's profile; anything given stays as given."""
    if model != "auto":
        return model, shots if shots is not None else 10, None
    profile = annotator_profile(use_gpu, cpu_flags, speed)
    return profile.model, shots if shots is not None else profile.shots, profile.why
