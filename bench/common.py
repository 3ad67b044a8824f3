"""What every label-quality benchmark shares: the data, the result files, the machine, SLM prediction."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("FREEAL_RAY_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from freeal_ray import metrics as M  # noqa: E402,F401

MR_LABELS = ("negative", "positive")


def load_split(benchmark: str, split: str) -> pd.DataFrame | None:
    path = DATA / benchmark / f"{split}.jsonl"
    if not path.exists():
        print(f"skipped: {path} is absent (set FREEAL_RAY_DATA to the folder holding {benchmark}/)")
        return None
    return pd.read_json(path, lines=True)


def quality(gold, pred, labels) -> dict:
    return M.scores(*M.confusion_of(list(gold), list(pred), labels))


def write_result(name: str, result: dict, table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"quality-{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    (RESULTS / f"quality-{name}.md").write_text(table)
    print(table)
    print(f"wrote {path}")
    return path


def read_result(name: str, prefix: str = "quality-") -> dict | None:
    """bench/results/<prefix><name>.json, or None when that benchmark has not run."""
    path = RESULTS / f"{prefix}{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def read_results(prefix: str) -> list[dict]:
    """Every bench/results/<prefix>*.json, in name order (a docs section's results)."""
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{prefix}*.json"))]


def machine() -> str:
    import torch

    from freeal_ray.engines import engine_dtype

    if torch.cuda.is_available():
        return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {torch.cuda.get_device_name(0)}"
    # The CPU model and the annotator's dtype matter: bfloat16 where the CPU has it natively was
    # several times faster per prompt than float32 on a CPU without it.
    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU, "
            f"annotator in {engine_dtype('auto', use_gpu=False)}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def tagger_scores(folder: Path, test: pd.DataFrame) -> dict:
    """A tagger checkpoint's entity precision, recall and F1 on test sentences (tokens, tags),
    through the package's public model API."""
    from freeal_ray import load_model

    preds = load_model(folder).predict([list(t) for t in test["tokens"]])
    return M.entity_scores([list(t) for t in test["tags"]], [p["tags"] for p in preds])


def predict(folder: Path, texts, labels=None, columns=("pred", "probs", "loss")) -> pd.DataFrame:
    """An SLM checkpoint's pred, probs and loss against `labels` (NaN where a row has none), through
    the package's public model API."""
    from freeal_ray import load_model

    return load_model(folder).score(texts, labels, batch_size=128)[list(columns)]


def commit() -> str | None:
    """The code a result came from: HEAD, marked dirty when the tree has uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def benchmark_subset(args, columns: list[str]):
    """(training subset, test split, work folder, corpus file) for a run, or None when the data is absent."""
    train, test = load_split(args.benchmark, "train"), load_split(args.benchmark, "test")
    if train is None or test is None:
        return None
    subset = train.sample(n=min(args.rows, len(train)), random_state=args.seed)
    work = ROOT / "bench" / "work" / f"{args.benchmark}-{len(subset)}"  # shared by tags: the zero-shot runs are reused
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "train.jsonl"
    subset[columns].to_json(corpus, orient="records", lines=True)
    return subset, test, work, corpus


def add_loop_arguments(parser, benchmarks: list[str], rows: int, what: str = "training rows") -> None:
    """The arguments every whole-loop benchmark takes."""
    parser.add_argument("--benchmark", required=True, choices=benchmarks)
    parser.add_argument("--rows", type=int, default=rows, help=f"{what}, sampled at random")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--llm", default="qwen2.5-coder-1.5b")
    parser.add_argument("--slm", default="all-minilm-l6-v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")
    parser.add_argument("--tag", default=None, help="a variant's name: its run folder is run-TAG, its result quality-BENCH-TAG.json")


def start_loop(args, output: Path, corpus: Path, overrides: dict):
    """A FreeAL run over a benchmark subset with the command line's settings, Ray up and the
    corpus ingested (a baseline can read it before the loop runs)."""
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray

    settings = {"output": str(output), "corpus.path": str(corpus), "llm.model": args.llm, "slm.model": args.slm,
                "loop.rounds": args.rounds, "loop.seed": args.seed, **overrides}
    settings.update(dict(kv.split("=", 1) for kv in args.set))
    ensure_ray()
    run = FreeALRun(load_config(None, settings))
    run.ingest()
    return run


def command_line() -> str:
    """The command that is running, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(["python", str(shown), *sys.argv[1:]])


def run_alone(description: str, add_arguments, run) -> None:
    """A benchmark module's own command line: its arguments, as quality.py's subcommand takes them."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    run(parser.parse_args())
