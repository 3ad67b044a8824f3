"""How fast this CPU multiplies matrices in bfloat16 and float32, measured once per machine.

CPU flags do not say it: a Xeon whose hypervisor hides AMX still reports AVX512-BF16, and there a
bfloat16 matmul ran no faster than float32 (140 against 143 GFLOP/s on 2 cores) where an AMD EPYC
(Zen 5) with the same flag ran the 1.5B annotator at 293 prompt tokens/s. The annotator's dtype and
size follow what this measures (profile.py), and the figure is kept in the cache folder so the
driver and every engine actor decide alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

SHAPE = (256, 1536, 1536)  # a prefill's rows x a 1.5B layer's width: the annotator's own matmul


def _cache_file(flags: set[str]) -> Path:
    root = Path(os.environ.get("FREEAL_RAY_CACHE") or Path.home() / ".cache" / "freeal_ray")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    key = hashlib.sha1(" ".join(sorted(flags)).encode() + str(cores).encode()).hexdigest()[:12]
    return root / f"cpu-speed-{key}.json"


def matmul_gflops(flags: set[str], seconds: float = 0.3) -> dict[str, float]:
    """GFLOP/s of a bfloat16 and a float32 matmul on every core this process may use."""
    path = _cache_file(flags)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    speed = {dtype: _measure(dtype, seconds) for dtype in ("bfloat16", "float32")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(speed))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: measured again next time
    return speed


def _measure(dtype: str, seconds: float) -> float:
    import torch

    m, k, n = SHAPE
    a = torch.randn(m, k).to(getattr(torch, dtype))
    b = torch.randn(k, n).to(getattr(torch, dtype))
    before = torch.get_num_threads()
    # every core, as the engine computes: a Ray actor's one-thread default would measure another CPU
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    try:
        a @ b  # the first call picks kernels
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
            a @ b
            runs += 1
    finally:
        torch.set_num_threads(before)
    return 2 * m * k * n * runs / elapsed / 1e9
