"""Whether the SLM learns every class from a small training set: the loop's own fit (robust
training, Ray Train, the config's defaults) with the floor on optimiser steps (slm.min_steps) and
without it (0: slm.epochs whatever the size), on the same noisy labels, scored on the test split.

The labels stand in for an LLM's: MR's `llm_label` (gpt-3.5's, 89.6% right) where the benchmark
has it, else the gold label with `--noise` of the rows moved to another class at random.

    python bench/slm_steps.py --benchmarks trec agnews mr --rows 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common import RESULTS, load_split, machine, predict, read_results

from freeal_ray.config import load_config
from freeal_ray.task import BENCHMARK_TASKS, get_preset


def noisy_labels(train, labels: list[str], noise: float, seed: int) -> list[str]:
    """MR's real LLM labels, or gold with `noise` of the rows moved to another class."""
    if "llm_label" in train:
        return list(train["llm_label"])
    rng = np.random.default_rng(seed)
    out = list(train["label"])
    for i in rng.choice(len(out), int(noise * len(out)), replace=False):
        out[i] = rng.choice([c for c in labels if c != out[i]])
    return out


def fit_and_score(train, test, labels: list[str], min_steps: int, seed: int, work: Path) -> dict:
    import ray

    from freeal_ray.stages.train import slm_settings
    from freeal_ray.task import label_indices
    from freeal_ray.training import train_slm
    from freeal_ray.training.settings import with_min_steps

    cfg = load_config(None, {"corpus.path": "unused.jsonl"})
    settings = with_min_steps(slm_settings(cfg.slm, tuple(labels), seed), len(train), 1, min_steps)
    rows = ray.data.from_pandas(train.assign(label_idx=label_indices(train["noisy"], labels))[["text", "label_idx"]])
    folder = work / f"slm-{min_steps}-{seed}"
    fit = train_slm(rows, settings, str(folder), 1, False, desc=f"fit min_steps={min_steps} seed={seed}")
    pred = predict(folder, list(test["text"]), columns=("pred",))["pred"]
    per_class = {c: round(float(np.mean(pred[test["label"].to_numpy() == c] == c)), 3) for c in labels}
    return {"min_steps": min_steps, "seed": seed, "epochs": settings.epochs, "test_acc": round(float(np.mean(pred == test["label"].to_numpy())), 4),
            "classes_predicted": int(pred.nunique()), "train_loss": round(float(fit.get("train_loss", float("nan"))), 2),
            "recall_by_class": per_class}


def run_benchmark(name: str, args, work: Path) -> dict | None:
    train, test = load_split(name, "train"), load_split(name, "test")
    if train is None or test is None:
        print(f"{name}: data absent, skipped")
        return None
    labels = list(get_preset(BENCHMARK_TASKS[name]).labels)
    test = test.sample(min(args.test_rows, len(test)), random_state=0)
    runs = []
    for seed in args.seeds:
        subset = train.sample(args.rows, random_state=seed).reset_index(drop=True)
        subset["noisy"] = noisy_labels(subset, labels, args.noise, seed)
        subset = subset[subset["noisy"].isin(labels)]
        for min_steps in (0, args.min_steps):
            runs.append({"benchmark": name, "label_accuracy": round(float(np.mean(subset["noisy"] == subset["label"])), 3),
                         **fit_and_score(subset, test, labels, min_steps, seed, work)})
            print(json.dumps(runs[-1]), flush=True)
    mean = {m: round(float(np.mean([r["test_acc"] for r in runs if r["min_steps"] == m])), 4) for m in (0, args.min_steps)}
    spread = {m: round(float(np.std([r["test_acc"] for r in runs if r["min_steps"] == m])), 4) for m in (0, args.min_steps)}
    return {"benchmark": name, "mean_test_acc": mean, "std_test_acc": spread, "runs": runs}


def docs_section() -> list[str]:
    """docs/benchmarks.md's section, from bench/results/slm-steps-*.json."""
    results = read_results("slm-steps-")
    if not results:
        return []
    lines = ["## How many steps the SLM needs: the floor on optimiser steps (`slm.min_steps`)", "",
             "`python bench/slm_steps.py`: the loop's own SLM fit (robust training, Ray Train, the config's defaults) on "
             "a benchmark's training rows with noisy labels (MR: gpt-3.5's; else gold with a share moved to another "
             "class), with the floor and without it (`slm.min_steps=0`, six epochs whatever the size), scored on the "
             "test split. Mean test accuracy over the seeds (standard deviation in brackets).", ""]
    for r in results:
        floor = str(r["min_steps"])
        lines += [f"{r['rows']} rows, seeds {r['seeds']}, {r['noise']:.0%} of gold labels moved where no LLM labels ship, "
                  f"on {r['machine']}", "",
                  "| benchmark | epochs without / with | without the floor | with the floor |", "|---|---|---|---|"]
        for b in r["benchmarks"]:
            epochs = sorted({run["epochs"] for run in b["runs"] if run["min_steps"] == r["min_steps"]})
            lines.append(f"| {b['benchmark']} | 6 / {', '.join(map(str, epochs))} | {b['mean_test_acc']['0']:.3f} "
                         f"({b['std_test_acc']['0']:.3f}) | {b['mean_test_acc'][floor]:.3f} ({b['std_test_acc'][floor]:.3f}) |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", default=["trec", "agnews", "mr"], choices=sorted(BENCHMARK_TASKS))
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.15, help="share of gold labels flipped where no LLM labels ship")
    parser.add_argument("--min-steps", type=int, default=load_config(None, {"corpus.path": "x"}).slm.min_steps)
    args = parser.parse_args()
    from freeal_ray.ray_cluster import ensure_ray

    ensure_ray()
    with tempfile.TemporaryDirectory(prefix="slm-steps-") as tmp:
        results = [r for name in args.benchmarks if (r := run_benchmark(name, args, Path(tmp)))]
    out = {"machine": machine(), "rows": args.rows, "test_rows": args.test_rows, "noise": args.noise,
           "min_steps": args.min_steps, "seeds": args.seeds, "benchmarks": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"slm-steps-{args.rows}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        print(f"{r['benchmark']}: test accuracy without the floor {r['mean_test_acc'][0]} (sd {r['std_test_acc'][0]}), "
              f"with min_steps={args.min_steps} {r['mean_test_acc'][args.min_steps]} (sd {r['std_test_acc'][args.min_steps]})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
