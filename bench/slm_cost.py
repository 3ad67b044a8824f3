"""What one SLM training step costs per encoder, and what a training budget on MR would take.

    python bench/slm_cost.py                                   # all-minilm-l6-v2 and all-mpnet-base-v2
    python bench/slm_cost.py --slm all-minilm-l6-v2 --slm /path/to/hf-folder

Times forward + backward + AdamW step of the SLM (encoder, mean pooling, linear head) on batches of
real MR training sentences at the bench's settings (batch 32, max length 64), in this process, on
this machine. The per-epoch figure is steps per epoch of MR's 8,662 training rows times the median
step; the mr-reference figure scales each method's measured wall time with all-minilm-l6-v2 by the
step-time ratio. Writes bench/results/slm-cost.json. Tells a user which encoder a corpus can afford
on a CPU, and why the mpnet rows of mr-reference need a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS, load_split, machine, read_result  # noqa: E402


def step_seconds(encoder: str, texts: list[str], batch_size: int, max_length: int, steps: int) -> list[float]:
    import torch
    from transformers import AutoTokenizer

    from freeal_ray.slm import SLMClassifier, tokenize

    torch.manual_seed(0)
    model = SLMClassifier(encoder, 2).train()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    labels = torch.zeros(batch_size, dtype=torch.long)
    times = []
    for i in range(steps + 2):  # the first two warm up the allocator and kernels; not counted
        batch = texts[i * batch_size : (i + 1) * batch_size]
        ids, mask = tokenize(tokenizer, batch, max_length)
        started = time.perf_counter()
        logits, _, _ = model(ids, mask)
        torch.nn.functional.cross_entropy(logits, labels[: len(batch)]).backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - started)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slm", action="append", help="SLM preset or HF folder; repeat (default: both presets)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per encoder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args(argv)
    import torch

    train = load_split("mr", "train")
    if train is None:
        return
    from freeal_ray.model_store import resolve_encoder

    texts = train.sample(frac=1.0, random_state=0)["text"].tolist()
    epoch_steps = -(-len(train) // args.batch_size)
    reference = read_result("mr-reference") or {}  # bench/results/quality-mr-reference.json
    minilm = reference.get("by_slm", {}).get("all-minilm-l6-v2", {}).get("methods", {})
    encoders = {}
    for slm in args.slm or ["all-minilm-l6-v2", "all-mpnet-base-v2"]:
        times = step_seconds(str(resolve_encoder(slm)), texts, args.batch_size, args.max_length, args.steps)
        median = statistics.median(times)
        encoders[slm] = {"step_s_median": round(median, 3), "step_s": [round(t, 3) for t in times],
                         "mr_epoch_s": round(median * epoch_steps)}
        print(f"{slm}: {median:.3f} s a step, about {median * epoch_steps / 60:.1f} min an MR epoch")
    base = encoders.get("all-minilm-l6-v2")
    for slm, e in encoders.items():
        if base and minilm:
            ratio = e["step_s_median"] / base["step_s_median"]
            e["step_ratio_to_minilm"] = round(ratio, 2)
            # each method's measured all-minilm-l6-v2 wall time, scaled by the step-time ratio
            e["mr_reference_estimate_s"] = {m: round(v["seconds"] * ratio) for m, v in minilm.items()
                                            if m in ("plain", "cleanlab", "robust", "gold") and "seconds" in v}
    result = {"batch_size": args.batch_size, "max_length": args.max_length, "mr_train_rows": len(train),
              "mr_epoch_steps": epoch_steps, "encoders": encoders, "machine": machine(),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "mr_reference_timed_on": reference.get("by_slm", {}).get("all-minilm-l6-v2", {}).get("machine")}
    path = RESULTS / "slm-cost.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
