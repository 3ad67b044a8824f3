"""Which step of EvoKD keeps its feedback from reaching the student, read from the folders of an
`evokd.py` run (no LLM call):

    python bench/evokd_steps.py --benchmark trec --shots 1

- *Generation*: in the rounds that wrote hard examples, the student before the round is run on every
  text written (kept or not). A hard text is aimed at a weakness, so the student should answer its
  intended class less often than an easy one's.
- *Labelling*: the share of hard and easy texts the labelling call labels as intended (the rest are
  dropped), and the student's accuracy on the kept ones, which is what it trains on.
- *Training*: every arm (EvoKD, each static draw) refit as a logistic head on frozen sentence
  embeddings of exactly the rows its student trained on. A fine-tuned student on a few tens of rows
  can collapse onto a class; a frozen head cannot drift like that. If both rank the arms alike, the
  gap lies in the rows, not in fine-tuning.

Reads bench/work/evokd-<benchmark>-<shots>shot[-<tag>]-seed*/ and its result file; scores on the same
test rows as evokd.py; writes bench/results/steps-evokd-<benchmark>-<shots>shot[-<tag>].json.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, load_split, machine, read_result, read_results, run_alone  # noqa: E402
from evokd import static_folder, test_rows  # noqa: E402


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, choices=["sst2", "trec", "agnews", "mr", "subj"])
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the frozen logistic head")


def run_steps_bench(args) -> None:
    name = f"evokd-{args.benchmark}-{args.shots}shot" + (f"-{args.tag}" if args.tag else "")
    source, test = read_result(name, prefix=""), load_split(args.benchmark, "test")
    if source is None or test is None:
        print(f"skipped: run bench/evokd.py for {name} first")
        return
    test = test_rows(test, source["test_rows"])
    works = {run["seed"]: ROOT / "bench" / "work" / f"{name}-seed{run['seed']}" for run in source["runs"]}
    if missing := [str(w) for w in works.values() if not (w / "evokd" / "manifest.json").exists()]:
        print(f"skipped: the run folders of {name} are gone ({', '.join(missing)}); rerun bench/evokd.py")
        return
    import pandas as pd

    written = pd.concat([written_in_hard_rounds(work / "evokd", source["rounds"]) for work in works.values()], ignore_index=True)
    encoder = _encoder(source["slm"])
    embedded = (encoder, encoder.embed(test["text"].tolist()), test["label"].to_numpy())
    heads = [frozen_heads(run, works[run["seed"]], source, embedded, args.C) for run in source["runs"]]
    result = {"source": name, "benchmark": args.benchmark, "shots": args.shots, "llm": source["llm"], "slm": source["slm"],
              **generation_and_labelling(written), **training(heads, args.C), "machine": machine(), "commit": commit()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"steps-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "frozen_head_seeds"}, indent=2))
    print(f"wrote {path}")


def written_in_hard_rounds(run: Path, rounds: int):
    """Every text written in the rounds of `run` that wrote hard ones: its intended class (`group`),
    hard or easy, the labelling call's label and the answer of the student before that round."""
    import pandas as pd

    from freeal_ray import load_model, tables
    from freeal_ray.stages.evolve_train import student_folder
    from freeal_ray.stages.evolve_write import written_folder

    frames = []
    for r in range(1, rounds + 1):
        written = tables.read_frame(run / written_folder(r))
        if not written["hard"].any():
            continue
        answers = tables.read_frame(run / "evolve" / f"round-{r}" / "answers")[["id", "label"]]
        rows = written.merge(answers, on="id", how="left")
        student = load_model(str(run / student_folder(r - 1)))
        rows["pred"] = [p["label"] for p in student.predict(rows["text"].fillna("").tolist())]
        frames.append(rows[["group", "hard", "label", "pred"]].assign(round=r))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["group", "hard", "label", "pred", "round"])


def generation_and_labelling(written) -> dict:
    """Hard against easy texts: the student answers the intended class (generation), the labelling
    call agrees with the intent (kept), with it on the texts the student missed, and the student is
    right on the kept ones (what it learns from)."""
    hard = written["hard"].astype(bool)
    out = {"hard_rounds_texts": {"hard": int(hard.sum()), "easy": int((~hard).sum())}}
    for kind, rows in (("hard", written[hard]), ("easy", written[~hard])):
        kept = rows[rows["label"] == rows["group"]]
        out[f"student_answers_intent_{kind}"] = _share(rows["pred"] == rows["group"])
        out[f"labelling_keeps_{kind}"] = _share(rows["label"] == rows["group"])
        out[f"student_right_on_kept_{kind}"] = _share(kept["pred"] == kept["group"])
        missed = rows[rows["pred"] != rows["group"]]  # what the feedback is for: texts that trip the student
        out[f"labelling_keeps_student_missed_{kind}"] = _share(missed["label"] == missed["group"])
    return out


def frozen_heads(run: dict, work: Path, source: dict, embedded, C: float) -> dict:
    statics = [static_folder(work, run["static_examples_written"], k) for k in range(source.get("static_runs_per_seed") or 1)]
    return {"seed": run["seed"], "evokd": _head_score(work / "evokd", source["rounds"], embedded, C),
            "static_draws": [_head_score(p, 1, embedded, C) for p in statics],
            "fine_tuned_evokd": run["evokd_test"], "fine_tuned_static": run["static_test"]}


def training(heads: list[dict], C: float) -> dict:
    for s in heads:
        s["static"] = statistics.mean(d["acc"] for d in s["static_draws"])
    gaps = [s["evokd"]["acc"] - s["static"] for s in heads]
    fine = [s["fine_tuned_evokd"] - s["fine_tuned_static"] for s in heads]
    within = [statistics.stdev(d["acc"] for d in s["static_draws"]) for s in heads if len(s["static_draws"]) > 1]
    return {"frozen_head": f"logistic regression on frozen embeddings, C={C}, balanced classes",
            "frozen_evokd_test": statistics.mean(s["evokd"]["acc"] for s in heads),
            "frozen_static_test": statistics.mean(s["static"] for s in heads),
            "frozen_evokd_minus_static": statistics.mean(gaps), "frozen_evokd_minus_static_error": _error(gaps),
            "frozen_static_within_seed_spread": statistics.mean(within) if within else None,
            "fine_tuned_evokd_minus_static": statistics.mean(fine), "fine_tuned_evokd_minus_static_error": _error(fine),
            "frozen_head_seeds": heads}


def _head_score(run: Path, rounds: int, embedded, C: float) -> dict:
    """Accuracy on the test rows of a logistic head on frozen embeddings (`embedded`: the encoder,
    the test rows' embeddings and labels) of the rows `run`'s final student (round `rounds`) trained on."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from freeal_ray import tables
    from freeal_ray.stages.evolve_train import batch_folder

    rows = pd.concat([tables.read_frame(run / batch_folder(r)) for r in range(rounds + 1)], ignore_index=True)
    encoder, test_x, test_labels = embedded
    head = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(encoder.embed(rows["text"].tolist()), rows["label"])
    return {"run": run.name, "rows": len(rows), "acc": float((head.predict(test_x) == test_labels).mean())}


def _encoder(slm: str):
    from freeal_ray.embedding import Encoder
    from freeal_ray.model_store import resolve_encoder

    return Encoder(str(resolve_encoder(slm)))


def _share(mask) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _error(values: list[float]) -> float | None:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def docs_section() -> list[str]:
    """docs/benchmarks.md's table of where EvoKD's feedback is lost, from bench/results/steps-evokd-*.json."""
    results = read_results("steps-evokd-")
    if not results:
        return []
    lines = ["### Where EvoKD's feedback is lost", "", "`python bench/evokd_steps.py --benchmark NAME --shots K` (reads an evokd.py run; no LLM call)", "",
             "In the rounds that wrote hard examples: how often the student before the round answers the class a text was written "
             "for (a hard text should trip it more than an easy one), how many the labelling call keeps, and how often the student is "
             "right on the kept ones (what it trains on); *keeps what the student missed* is the labelling call's keep rate on the texts the student answered otherwise than intended, the ones the feedback is for. Then every arm refit as a logistic head on frozen embeddings of the same "
             "rows: if it ranks EvoKD and static as the fine-tuned student does, the gap lies in the rows, not in training.", "",
             "| benchmark | shots | LLM | texts hard / easy | student answers intent, hard / easy | labelling keeps, hard / easy "
             "| labelling keeps what the student missed, hard / easy | student right on kept, hard / easy | EvoKD − static, fine-tuned | EvoKD − static, frozen head | machine | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = r["hard_rounds_texts"]
        lines.append(f"| {r['benchmark']} | {r['shots']} | {r['llm']} | {n['hard']} / {n['easy']} "
                     f"| {_pair(r, 'student_answers_intent')} | {_pair(r, 'labelling_keeps')} | {_pair(r, 'labelling_keeps_student_missed')} "
                     f"| {_pair(r, 'student_right_on_kept')} "
                     f"| {_gap(r, 'fine_tuned')} | {_gap(r, 'frozen')} | {r['machine']} | {r.get('commit') or '—'} |")
    return lines + [""]


def _pair(result: dict, key: str) -> str:
    return " / ".join("—" if result[f"{key}_{k}"] is None else f"{result[f'{key}_{k}']:.2f}" for k in ("hard", "easy"))


def _gap(result: dict, arm: str) -> str:
    error = result[f"{arm}_evokd_minus_static_error"]
    return f"{result[f'{arm}_evokd_minus_static']:+.3f}" + (f" ± {error:.3f}" if error else "")


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], add_arguments, run_steps_bench)
