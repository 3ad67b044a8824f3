"""Incremental-subset mode against the full-corpus loop, on one benchmark, same models and seed.

    python bench/incremental.py --benchmark sst2 --rows 400 --fraction 0.1 --rounds 3

The full loop annotates every row in round 0 and re-asks the LLM about the noisy ones each round.
Incremental mode annotates a fresh `fraction` of the corpus per round (round 0 at random, later
rounds by `--strategy`), and the last SLM labels the rows the LLM never saw. Reported for each:
accuracy of the final labels on every training row, the SLM on the test split, LLM calls and
prompt tokens, wall time. Writes bench/results/incremental-<benchmark>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import RESULTS, load_split, machine, predict, quality  # noqa: E402


def run_mode(name: str, corpus: Path, work: Path, overrides: dict, test, labels) -> dict:
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun

    config = load_config(None, {**overrides, "corpus.path": str(corpus), "output": str(work / name)})
    started = time.time()
    result = FreeALRun(config).run()
    wall = time.time() - started
    rounds = {int(k): v for k, v in result.rounds.items()}
    last = rounds[max(rounds)]
    slm = predict(result.slm_path, test["text"])["pred"] if result.slm_path else None
    return {
        "final_acc": last.get("final_acc"),
        "slm_test_acc": quality(test["label"], slm, labels)["acc"] if slm is not None else None,
        "llm_calls": sum(r.get("llm_calls", 0) for r in rounds.values()),
        "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in rounds.values()),
        "slm_labelled_rows": last.get("slm_labelled_rows", 0),
        "rounds_run": max(rounds),
        "wall_seconds": round(wall),
        "per_round": rounds,
    }


def table(result: dict) -> str:
    lines = ["| mode | final labels acc | SLM test acc | LLM calls | prompt tokens | rows the SLM labelled | wall s |",
             "|---|---|---|---|---|---|---|"]
    for mode in ("full", "incremental"):
        r = result[mode]
        lines.append(f"| {mode} | {r['final_acc']:.4f} | {r['slm_test_acc']:.4f} | {r['llm_calls']} | "
                     f"{r['prompt_tokens']} | {r['slm_labelled_rows']} | {r['wall_seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="sst2", choices=["mr", "sst2", "subj", "trec", "agnews", "medabs"])
    parser.add_argument("--rows", type=int, default=400, help="training rows, sampled at random")
    parser.add_argument("--fraction", type=float, default=0.1, help="incremental: share of the corpus annotated per round")
    parser.add_argument("--rounds", type=int, default=3, help="incremental: rounds after round 0")
    parser.add_argument("--strategy", default="entropy", choices=["random", "entropy", "margin"])
    parser.add_argument("--llm", default="qwen2.5-coder-0.5b")
    parser.add_argument("--slm", default="all-minilm-l6-v2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.task import BENCHMARK_TASKS, get_preset

    train, test = load_split(args.benchmark, "train"), load_split(args.benchmark, "test")
    if train is None or test is None:
        return
    subset = train.sample(n=min(args.rows, len(train)), random_state=args.seed)
    work = ROOT / "bench" / "work" / f"incremental-{args.benchmark}-{len(subset)}"
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "train.jsonl"
    subset[["id", "text", "label"]].to_json(corpus, orient="records", lines=True)
    labels = get_preset(BENCHMARK_TASKS[args.benchmark]).labels
    base = {"task": BENCHMARK_TASKS[args.benchmark], "corpus.gold_column": "label", "llm.model": args.llm,
            "slm.model": args.slm, "loop.seed": args.seed}
    ensure_ray()
    result = {
        "benchmark": args.benchmark, "rows": len(subset), "test_rows": len(test), "llm": args.llm, "slm": args.slm,
        "fraction": args.fraction, "strategy": args.strategy, "machine": machine(),
        "full": run_mode("full", corpus, work, base, test, labels),
        "incremental": run_mode("incremental", corpus, work, {
            **base, "loop.subset_fraction": args.fraction, "loop.subset_strategy": args.strategy,
            "loop.rounds": args.rounds}, test, labels),
        "command": "python bench/incremental.py " + " ".join(sys.argv[1:]),
    }
    full, inc = result["full"], result["incremental"]
    result["llm_calls_ratio"] = round(inc["llm_calls"] / max(full["llm_calls"], 1), 3)
    result["final_acc_delta"] = round(inc["final_acc"] - full["final_acc"], 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"incremental-{args.benchmark}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    path.with_suffix(".md").write_text(table(result))
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
