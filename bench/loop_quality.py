"""The whole loop with the embedded LLM on a benchmark's training subset, against the same LLM's
zero-shot answers in both prompt styles; the SLM also on the test split.

    python bench/loop_quality.py --benchmark sst2 --rows 400 [--rounds 2] [--tag NAME]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules import each other
from common import (M, add_loop_arguments, benchmark_subset, command_line, commit, machine, predict, quality,  # noqa: E402
                    run_alone, start_loop, write_result)


def run_loop(args) -> None:
    from freeal_ray.task import BENCHMARK_TASKS

    picked = benchmark_subset(args, ["id", "text", "label"])
    if picked is None:
        return
    subset, test, work, corpus = picked
    started = time.time()
    run = start_loop(args, work / (f"run-{args.tag}" if args.tag else "run"), corpus,
                     {"task": BENCHMARK_TASKS[args.benchmark], "corpus.gold_column": "label"})
    config = run.ctx.cfg
    zero_shot = zero_shot_quality(run, work / "zero-shot", "plain")
    zero_shot_chat = zero_shot_quality(run, work / "zero-shot-chat", "chat")
    best_zero_shot = max(zero_shot["acc"], zero_shot_chat["acc"])
    result = run.run()
    wall = time.time() - started
    labels = config.resolved_task().labels
    slm_test = quality(test["label"], predict(result.slm_path, test["text"])["pred"], labels) if result.slm_path else None
    rounds = {int(k): v for k, v in result.rounds.items()}
    summary = {
        "benchmark": args.benchmark, "rows": len(subset), "test_rows": len(test), "llm": args.llm, "slm": args.slm,
        "zero_shot_llm_acc": best_zero_shot, "zero_shot_plain_acc": zero_shot["acc"],
        "zero_shot_chat_acc": zero_shot_chat["acc"], "zero_shot_llm_macro_f1": zero_shot["macro_f1"],
        "zero_shot_chat_macro_f1": zero_shot_chat["macro_f1"], "prompt_style": run.ctx.llm().prompt_style,
        "zero_shot_llm_calls": zero_shot["n"], "zero_shot_top_label": zero_shot["top_label"],
        "round0_llm_acc": rounds[0].get("llm_acc"),
        **kept_round_figures(rounds),
        "slm_test_acc": slm_test["acc"] if slm_test else None,
        "slm_test_macro_f1": slm_test["macro_f1"] if slm_test else None,
        "llm_calls": sum(r.get("llm_calls", 0) for r in rounds.values()),
        "wall_seconds": round(wall), "rounds": rounds, "machine": machine(),
        "synthesis": run.manifest.stage("synthesize").get("synthesis"), "commit": commit(),
        "round0_demos": {k: run.manifest.stage("synthesize").get(k) for k in ("round0_demos", "demos", "seed_rows",
                                                                               "confident_demos", "confident_demo_acc")},
        "command": command_line(),
    }
    write_result(f"{args.benchmark}-{args.tag}" if args.tag else args.benchmark, summary, loop_table(summary))


def zero_shot_quality(run, folder: Path, style: str) -> dict:
    """The LLM with no demos at all, in prompt style `style`: the better of plain and chat is the
    baseline FreeAL has to beat."""
    import dataclasses

    from freeal_ray import tables
    from freeal_ray.annotation import annotate

    n = run.manifest.stage("ingest")["rows"]
    if tables.count_rows(folder) < n:
        llm = dataclasses.replace(run.ctx.llm(), prompt_style=style)
        annotate(run.ctx.table("corpus"), pd.DataFrame(columns=["id", "text", "label"]), run.task, llm,
                 "", 0, 0, str(folder), total=n)
    # One pass: the confusion matrix's column sums are how often each label was answered.
    matrix, abstained = M.confusion(tables.read_table(folder), "label", run.task.labels)
    answered = matrix.sum(0)
    top = ({"label": run.task.labels[int(answered.argmax())], "share": float(answered.max() / answered.sum())}
           if answered.sum() else None)
    return {**M.scores(matrix, abstained), "top_label": top}


def kept_round_figures(rounds: dict) -> dict:
    """llm_acc, slm_acc and final_acc of the round whose labels the run kept: the last one that wrote
    labels. A round the early-stop guard rejected (its SLM agreed with fewer labels) has an SLM
    figure but no labels, and the run's output is the round before it."""
    kept = max((k for k, m in rounds.items() if m.get("final_acc") is not None), default=0)
    return {"llm_acc": rounds[kept].get("llm_acc"), "slm_acc": rounds[kept].get("slm_acc"),
            "final_acc": rounds[kept].get("final_acc", rounds[0].get("llm_acc"))}


def loop_table(s: dict) -> str:
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"{s['benchmark']}: {s['rows']} training rows, LLM {s['llm']}, SLM {s['slm']}, {s['wall_seconds']} s on {s['machine']}.\n",
        "| round | LLM acc | LLM macro-F1 | SLM acc | final acc | clean share | noisy rows | noisy precision | noisy recall | fixed | broken | LLM calls | prompt tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gap = "  |  |  |  |"  # the split and refinery columns, empty on zero-shot rows
    if "zero_shot_chat_acc" in s:
        lines += [f"| zero-shot, plain prompt | {fmt(s['zero_shot_plain_acc'])} | {fmt(s['zero_shot_llm_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |",
                  f"| zero-shot, chat prompt | {fmt(s['zero_shot_chat_acc'])} | {fmt(s['zero_shot_chat_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |"]
    else:
        lines.append(f"| zero-shot | {fmt(s['zero_shot_llm_acc'])} | {fmt(s['zero_shot_llm_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |")
    for r, m in sorted(s["rounds"].items()):
        cells = [m.get(k) for k in ("llm_acc", "llm_macro_f1", "slm_acc", "final_acc", "clean_fraction", "noisy_rows", "noisy_precision",
                                    "noisy_recall", "fixed", "broken", "llm_calls", "prompt_tokens")]
        lines.append(f"| {r} | " + " | ".join(fmt(c) for c in cells) + " |")
    lines.append(f"\nSLM on the test split ({s['test_rows']} rows): accuracy {fmt(s['slm_test_acc'])}, macro-F1 {fmt(s['slm_test_macro_f1'])}.\n")
    seeded = s.get("round0_demos") or {}
    if seeded.get("confident_demos"):
        lines.append(f"Round-0 demos ({seeded['round0_demos']}): the LLM labelled {seeded['seed_rows']} rows zero-shot; its "
                     f"{seeded['confident_demos']} surest answers, spread by k-medoids, became demos, "
                     f"{fmt(seeded.get('confident_demo_acc'))} of them right.\n")
    syn = s.get("synthesis")
    if syn:
        lines.append(f"Round-0 synthesis: the LLM wrote {syn['written']} examples; {syn['empty']} were empty, "
                     f"{syn['copied_a_corpus_row']} repeated a corpus row they were shown, {syn['written_for_two_labels']} "
                     f"were written for two labels, {syn['repeated']} repeated another; {syn['kept']} became demos.\n")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_loop_arguments(parser, ["mr", "sst2", "subj", "trec", "agnews", "medabs"], rows=400)


if __name__ == "__main__":
    run_alone("the whole loop with the embedded LLM on a benchmark subset", add_arguments, run_loop)
