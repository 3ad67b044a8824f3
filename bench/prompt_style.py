"""Which prompt style the annotator answers best in: plain completion prompts or its chat template.

    python bench/prompt_style.py [--model qwen2.5-coder-1.5b] [--rows 400] [--shot-rows 100]

Zero-shot, on the rows the whole-loop benchmarks label (each benchmark's training split,
`sample(n=rows, random_state=0)`): plain vs chat, answers constrained to the label words and read
greedily, as the loop's annotation does. Few-shot, on `--shot-rows` of those rows of MR and AG News:
plain, chat with the demos listed in the user's message, and chat with the demos as earlier turns,
each with the 10 nearest of the same 200 gold-labelled rows from elsewhere in the training split
(gold demos isolate the prompt form from demo quality; the loop's own demos are noisier).

One engine for every prompt, built as the loop builds it. Writes bench/results/prompt-style.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
DATA = Path(os.environ.get("FREEAL_RAY_DATA", ROOT.parent / "shared" / "data"))
RESULT = ROOT / "bench" / "results" / "prompt-style.json"
SHOT_BENCHMARKS = ("mr", "agnews")


def loop_rows(benchmark: str, rows: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The whole-loop benchmark's rows, and 200 other training rows as a demo pool."""
    path = DATA / benchmark / "train.jsonl"
    if not path.exists():
        print(f"skipped {benchmark}: {path} is absent")
        return None
    train = pd.read_json(path, lines=True)
    subset = train.sample(n=min(rows, len(train)), random_state=0)
    rest = train.drop(subset.index)
    return subset.reset_index(drop=True), rest.sample(n=min(200, len(rest)), random_state=1).reset_index(drop=True)


def accuracy(engine, task, prompts: list[str], gold: list[str], style: str) -> dict:
    from freeal_ray.prompts import answer_choices

    started = time.perf_counter()
    answers = []
    for i in range(0, len(prompts), 32):
        answers += engine.choose(prompts[i : i + 32], answer_choices(task, style))
    seconds = time.perf_counter() - started
    picked = [task.labels[a.index] if a.index is not None else None for a in answers]
    answered = pd.Series([p for p in picked if p is not None])
    return {"acc": round(sum(p == g for p, g in zip(picked, gold)) / len(gold), 4), "rows": len(gold),
            "abstained": sum(p is None for p in picked), "seconds": round(seconds, 1),
            "prompt_tokens": sum(a.prompt_tokens for a in answers),
            "top_label_share": round(float(answered.value_counts(normalize=True).max()), 3) if len(answered) else None}


EXPLAINED = """
## Prompt style: plain completion prompts or the model's chat template

`python bench/prompt_style.py`

The annotator asked about the rows each whole-loop benchmark labels, answers constrained to the label
words and read greedily as the loop's annotation reads them. *plain* is the loop's completion prompt
ending in "Label:"; *chat* the model's chat template with the instruction as the system message;
*chat-turns* the template with each demo as an earlier user/assistant turn. Few-shot rows use the 10
nearest of 200 gold-labelled training rows from outside the benchmark's rows (gold demos isolate the
prompt form from demo quality). `llm.prompt_style: auto` takes the winner per annotator preset.
"""


def docs_section() -> list[str]:
    """docs/benchmarks.md's prompt-style section, from prompt-style.json (bench/quality.py docs)."""
    if not RESULT.exists():
        return []
    r = json.loads(RESULT.read_text())
    names = sorted({k for b in r["benchmarks"].values() for k in b}, key=lambda k: (int(k.split("_")[1]), k))
    head = "| benchmark | " + " | ".join(n.replace("_0_shot", ", zero-shot").replace("_10_shot", ", 10-shot") for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for bench, out in r["benchmarks"].items():
        cells = [f"{out[n]['acc']:.3f} ({out[n]['rows']})" if n in out else "" for n in names]
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    return [EXPLAINED, f"{r['model']} in {r['dtype']}, {r['threads']} threads; accuracy (rows).\n", "\n".join(lines) + "\n"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--shot-rows", type=int, default=100)
    parser.add_argument("--benchmark", action="append", help="only these (default: all six)")
    a = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from freeal_ray.workers import PromptBuilder
    from freeal_ray.engines import EngineConfig, VLLMEngine, engine_dtype
    from freeal_ray.model_store import resolve_encoder, resolve_llm
    from freeal_ray.task import BENCHMARK_TASKS, get_preset

    llm_path, encoder = str(resolve_llm(a.model)), str(resolve_encoder("all-minilm-l6-v2"))
    engine = VLLMEngine(EngineConfig(model_path=llm_path, kv_cache_gib=2))
    result = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    result.update(model=a.model, dtype=engine_dtype("auto", False), threads=engine.threads, rows=a.rows)
    benchmarks = result.setdefault("benchmarks", {})
    for name in a.benchmark or list(BENCHMARK_TASKS):
        picked = loop_rows(name, a.rows)
        if picked is None:
            continue
        rows, pool = picked
        task, out = get_preset(BENCHMARK_TASKS[name]), {}
        for style, shots, n in [("plain", 0, len(rows)), ("chat", 0, len(rows))] + (
                [("plain", 10, a.shot_rows), ("chat", 10, a.shot_rows), ("chat-turns", 10, a.shot_rows)]
                if name in SHOT_BENCHMARKS else []):
            builder = PromptBuilder(task, pool.assign(origin="corpus"), encoder, shots, 1000, style, llm_path)
            part = rows.iloc[:n]
            prompts = builder(part[["id", "text"]])["prompt"].tolist()
            out[f"{style}_{shots}_shot"] = accuracy(engine, task, prompts, part["label"].tolist(), style)
            print(name, style, shots, out[f"{style}_{shots}_shot"], flush=True)
        benchmarks[name] = out
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
