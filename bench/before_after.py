"""The same benchmark run by two commits of the package, on one machine: did a change move the labels?

    python bench/before_after.py --name mr-200-0.5b --before OLD/bench/results/quality-mr.json \\
        --after bench/results/quality-mr-200-0.5b.json --before-commit 2f9301d

Each side is a result file of bench/loop_quality.py or bench/ner_quality.py run with the same
arguments (the older commit from a worktree of its own). The comparison is the figures both files
hold, side by side with their difference; it lands in bench/results/before-after-<name>.json and on
docs/benchmarks.md. Greedy decoding on the same rows gives near-identical LLM answers, so a small
subset already tells a change of behaviour from none.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, read_results, run_alone  # noqa: E402

FIGURES = ("zero_shot_llm_acc", "round0_llm_acc", "llm_acc", "slm_acc", "final_acc", "slm_test_acc", "llm_calls",
           "zero_shot_llm_f1", "round0_llm_f1", "llm_f1", "slm_f1", "final_f1", "slm_test_f1")


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the comparison's name: bench/results/before-after-NAME.json")
    parser.add_argument("--before", required=True, type=Path, help="the older commit's result file")
    parser.add_argument("--after", required=True, type=Path, help="this commit's result file")
    parser.add_argument("--before-commit", default=None, help="the older commit, where its result file does not say")
    parser.add_argument("--note", default=None, help="what the figures say, shown under the table")


def compare(before: dict, after: dict) -> dict:
    """Each figure both results hold: {before, after, change}."""
    shared = [k for k in FIGURES if before.get(k) is not None and after.get(k) is not None]
    return {k: {"before": before[k], "after": after[k], "change": after[k] - before[k]} for k in shared}


def run_before_after(args) -> None:
    before, after = json.loads(args.before.read_text()), json.loads(args.after.read_text())
    for key in ("benchmark", "rows", "llm", "slm"):
        if before.get(key) != after.get(key):
            raise SystemExit(f"the two results differ in {key}: {before.get(key)!r} vs {after.get(key)!r}; compare like with like")
    result = {
        "name": args.name, "benchmark": after["benchmark"], "rows": after["rows"], "llm": after["llm"],
        "before_commit": before.get("commit") or args.before_commit, "after_commit": after.get("commit"),
        "before_command": before.get("command"), "after_command": after.get("command"),
        "figures": compare(before, after),
        "wall_seconds": {"before": before.get("wall_seconds"), "after": after.get("wall_seconds")},
        "machine": after.get("machine"), "note": args.note,
    }
    path = RESULTS / f"before-after-{args.name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print("\n".join(table(result)))
    print(f"wrote {path}")


def table(r: dict) -> list[str]:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"### {r['name']}: {r['before_commit']} → {r['after_commit']}", "", f"`{r['after_command']}` on {r['machine']}", "",
             "| figure | before | after | change |", "|---|---|---|---|"]
    lines += [f"| {k} | {fmt(v['before'])} | {fmt(v['after'])} | {fmt(v['change'])} |" for k, v in r["figures"].items()]
    wall = r["wall_seconds"]
    if wall["before"] and wall["after"]:
        lines.append(f"| wall seconds | {wall['before']} | {wall['after']} | {wall['after'] - wall['before']:+d} |")
    return lines + ([""] + [r["note"]] if r.get("note") else []) + [""]


def docs_section() -> list[str]:
    """docs/benchmarks.md's before/after section, from bench/results/before-after-*.json."""
    results = read_results("before-after-")
    if not results:
        return []
    lines = ["## Before and after a change: the same benchmark run by two commits", "",
             "`python bench/before_after.py --name NAME --before OLD.json --after NEW.json`: both result files from the same "
             "benchmark command on the same machine, the older commit run from a worktree of its own.", ""]
    for r in results:
        lines += table(r)
    return lines


if __name__ == "__main__":
    run_alone(__doc__, add_arguments, run_before_after)
