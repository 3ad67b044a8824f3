"""Whether an EvoKD-vs-static gap lies in the rows or in the student's fine-tuning: every arm of an
`evokd.py` run (EvoKD and each static draw, per seed) refit as a frozen-encoder logistic head on
exactly the rows its student trained on (the seeds and every kept batch).

    python bench/evokd_heads.py --benchmark trec --shots 1

A fine-tuned student on a few tens of rows can collapse onto one or two classes; a logistic head on
frozen sentence embeddings cannot drift like that. If both students rank the arms alike, the gap is
in what the LLM wrote and kept, not in training. Reads bench/work/evokd-<benchmark>-<shots>shot[-<tag>]-seed*/,
scores on the same test rows as evokd.py; writes bench/results/frozen-head-evokd-<benchmark>-<shots>shot[-<tag>].json.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, load_split, machine, read_result, run_alone  # noqa: E402


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, choices=["sst2", "trec", "agnews", "mr", "subj"])
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the logistic head")


def run_heads_bench(args) -> None:
    name = f"evokd-{args.benchmark}-{args.shots}shot" + (f"-{args.tag}" if args.tag else "")
    source = read_result(name, prefix="")
    train_test = load_split(args.benchmark, "test")
    if source is None or train_test is None:
        print(f"skipped: run bench/evokd.py for {name} first")
        return
    test = train_test.sample(n=min(source["test_rows"], len(train_test)), random_state=0)  # evokd.py's rows
    encoder = _encoder(source["slm"])
    test_x = encoder.embed(test["text"].tolist())
    seeds = []
    for run in source["runs"]:
        work = ROOT / "bench" / "work" / f"{name}-seed{run['seed']}"
        n = run["static_examples_written"]
        statics = [work / (f"static-{n}" + (f"-run{k}" if k else "")) for k in range(source.get("static_runs_per_seed") or 1)]
        seeds.append({"seed": run["seed"], "evokd": _head_score(work / "evokd", encoder, test_x, test["label"], args.C),
                      "static_draws": [_head_score(p, encoder, test_x, test["label"], args.C) for p in statics],
                      "fine_tuned_evokd": run["evokd_test"], "fine_tuned_static": run["static_test"]})
    result = summarise(args, name, source, seeds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"frozen-head-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seeds"}, indent=2))
    print(f"wrote {path}")


def summarise(args, name: str, source: dict, seeds: list[dict]) -> dict:
    for s in seeds:
        s["static"] = statistics.mean(d["acc"] for d in s["static_draws"])
    gaps = [s["evokd"]["acc"] - s["static"] for s in seeds]
    return {
        "source": name, "benchmark": args.benchmark, "shots": args.shots, "head": f"logistic regression, C={args.C}, balanced classes",
        "slm": source["slm"], "test_rows": source["test_rows"],
        "frozen_evokd_test": statistics.mean(s["evokd"]["acc"] for s in seeds),
        "frozen_static_test": statistics.mean(s["static"] for s in seeds),
        "frozen_evokd_minus_static": statistics.mean(gaps),
        "frozen_evokd_minus_static_error": statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else None,
        "fine_tuned_evokd_test": source["evokd_test"], "fine_tuned_static_test": source["static_test"],
        "seeds": seeds, "machine": machine(), "commit": commit(),
    }


def _encoder(slm: str):
    from freeal_ray.embedding import Encoder
    from freeal_ray.model_store import resolve_encoder

    return Encoder(str(resolve_encoder(slm)))


def _head_score(run: Path, encoder, test_x, test_labels, C: float) -> dict:
    """Accuracy of a logistic head on frozen embeddings of the rows `run`'s final student trained on."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from freeal_ray import tables

    batches = sorted((run / "evolve").glob("round-*/batch"), key=lambda p: int(p.parent.name.split("-")[1]))
    rows = pd.concat([tables.read_frame(p) for p in batches], ignore_index=True)
    head = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    head.fit(encoder.embed(rows["text"].tolist()), rows["label"])
    return {"run": run.name, "rows": len(rows), "acc": float((head.predict(test_x) == test_labels.to_numpy()).mean())}


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], add_arguments, run_heads_bench)
