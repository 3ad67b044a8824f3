"""The NER loop on a CoNLL-03 or BC5CDR subset: entity F1 of the zero-shot LLM, the LLM with FreeAL's
demos, the tagger and the final tags; the tagger also on test sentences.

    python bench/ner_quality.py --benchmark conll03 --rows 200 [--tag NAME]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules import each other
from common import M, add_loop_arguments, benchmark_subset, command_line, commit, machine, run_alone, start_loop, tagger_scores, write_result  # noqa: E402


def run_ner(args) -> None:
    """The NER loop on a CoNLL-03 or BC5CDR training subset: entity F1 of the zero-shot LLM, the
    LLM with FreeAL's demos, the tagger and the final tags; the tagger also on a test subset."""
    picked = benchmark_subset(args, ["id", "tokens", "tags"])
    if picked is None:
        return
    subset, test, work, corpus = picked
    test = test.sample(n=min(args.test_rows, len(test)), random_state=args.seed)
    started = time.time()
    run = start_loop(args, work / (f"run-{args.tag}" if args.tag else "run"), corpus,
                     {"task": args.benchmark, "corpus.text_column": "tokens", "corpus.gold_column": "tags"})
    zero_shot = ner_zero_shot(run, work / "zero-shot")
    result = run.run()
    wall = time.time() - started
    slm_test = tagger_scores(result.slm_path, test) if result.slm_path else None
    rounds = {int(k): v for k, v in result.rounds.items()}
    last = max(rounds)
    summary = {
        "benchmark": args.benchmark, "task": "ner", "rows": len(subset), "test_rows": len(test),
        "llm": args.llm, "slm": args.slm,
        "zero_shot_llm_f1": zero_shot["f1"], "zero_shot_llm_precision": zero_shot["precision"],
        "zero_shot_llm_recall": zero_shot["recall"], "zero_shot_llm_calls": len(subset),
        "round0_llm_f1": rounds[0].get("llm_f1"),
        "llm_f1": rounds[last].get("llm_f1"),
        "slm_f1": rounds[last].get("slm_f1"),
        "final_f1": rounds[last].get("final_f1", rounds[0].get("llm_f1")),
        "slm_test_f1": slm_test["f1"] if slm_test else None,
        "llm_calls": sum(r.get("llm_calls", 0) for r in rounds.values()) + len(subset),
        "synthesis": run.manifest.stage("synthesize").get("synthesis"),
        "wall_seconds": round(wall), "rounds": rounds, "machine": machine(),
        "loop_seconds": round(sum(v["seconds"] for v in run.manifest.data["stages"].values())),
        "commit": commit(), "command": command_line(),
    }
    write_result(f"{args.benchmark}-{args.tag}" if args.tag else args.benchmark, summary, ner_table(summary))


def ner_zero_shot(run, folder: Path) -> dict:
    """The LLM with no demo sentence at all."""
    from freeal_ray import tables
    from freeal_ray.annotation import annotate

    n = run.manifest.stage("ingest")["rows"]
    if tables.count_rows(folder) < n:
        annotate(run.ctx.table("corpus"), pd.DataFrame(columns=["id", "text", "tokens", "tags"]), run.task, run.ctx.llm(),
                 "", 0, 0, str(folder), total=n)
    return M.entity_quality(tables.read_table(folder), "tags")


def ner_table(s: dict) -> str:
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"{s['benchmark']}: {s['rows']} training sentences, LLM {s['llm']}, SLM {s['slm']}; the loop's stages took "
        f"{s.get('loop_seconds', s['wall_seconds'])} s on {s['machine']} (the zero-shot baseline not counted).\n",
        "| round | LLM entity F1 | LLM precision | LLM recall | SLM entity F1 | final F1 | clean share | noisy sentences | LLM calls | prompt tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| zero-shot | {fmt(s['zero_shot_llm_f1'])} | {fmt(s['zero_shot_llm_precision'])} | {fmt(s['zero_shot_llm_recall'])} |  |  |  |  | {s['zero_shot_llm_calls']} |  |",
    ]
    for r, m in sorted(s["rounds"].items()):
        cells = [m.get(k) for k in ("llm_f1", "llm_precision", "llm_recall", "slm_f1", "final_f1", "clean_fraction",
                                     "noisy_rows", "llm_calls", "prompt_tokens")]
        lines.append(f"| {r} | " + " | ".join(fmt(c) for c in cells) + " |")
    rounds = {int(k): v for k, v in s["rounds"].items()}
    last, learnt = rounds[max(rounds)], rounds[max(max(rounds) - 1, 0)]  # round r's tagger learns round r-1's labels
    points = lambda a, b: f"{100 * (a - b):+.1f}" if a is not None and b is not None else "n/a"  # noqa: E731
    lines.append(
        f"\nWhat changed: FreeAL's self-written demos moved the LLM's entity F1 by "
        f"{points(s['round0_llm_f1'], s['zero_shot_llm_f1'])} points over zero-shot; re-asking the noisy sentences "
        f"with the tagger's demos moved it by {points(last.get('llm_f1'), s['round0_llm_f1'])} more. The tagger is "
        f"{points(s['slm_f1'], learnt.get('llm_f1'))} points from the labels it learnt from."
    )
    syn = s.get("synthesis") or {}
    lines.append(f"\nTagger on {s['test_rows']} test sentences: entity F1 {fmt(s['slm_test_f1'])}. "
                 f"Round-0 synthesis: the LLM wrote {syn.get('written', 0)} sentences; {syn.get('unparsed', 0)} "
                 f"answers were not the schema's JSON, {syn.get('no_entity_placed', 0)} placed no entity in their "
                 f"sentence, and {syn.get('spans_dropped', 0)} entity spans were dropped.\n")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_loop_arguments(parser, ["conll03", "bc5cdr"], rows=200, what="training sentences")
    parser.add_argument("--test-rows", type=int, default=500, help="test sentences the tagger is scored on")


if __name__ == "__main__":
    run_alone("the NER loop with the embedded LLM on a CoNLL-03 or BC5CDR subset", add_arguments, run_ner)
