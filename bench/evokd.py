"""EvoKD against static synthesis at equal LLM tokens, from a few seeds per class.

    python bench/evokd.py --benchmark sst2 --shots 1 [--rounds 4] [--batch 16] [--seeds 0 1 2]
    python bench/evokd.py --benchmark conll03 --shots 1 --llm qwen2.5-coder-0.5b

Per seed: `--shots` examples per class drawn from the training split are the task's examples (NER:
`--shots` sentences per entity type, each with all its entities listed).
(a) *seeds only*: the student trained on them (EvoKD's round 0). (c) *EvoKD*: `--rounds` rounds of
`--batch` examples, the LLM studying the student's mistakes. (b) *static*: one batch, no analysis
and no feedback (`loop.evolve_hard_share 0`: typical examples of each class), as many examples as
EvoKD's tokens buy at static's cost per example, so both spend about the same LLM tokens (each
run's tokens are reported). The student's accuracy is on the benchmark's test split, per round for
EvoKD; NER students are scored by entity F1 on the test sentences. A static batch of that size
moves a lot from one draw to the next (TREC 1-shot at 0.5B: 0.666 and 0.506 on seed 0's examples), so
`--static-runs K` draws it K times per seed (run seed seed + 1000k: other sampling, other style
texts, another student init; the same seed examples) and a seed's static score is their mean. Results:
bench/results/evokd-<benchmark>-<shots>shot[-<tag>].json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, load_split, machine, quality, read_results, run_alone, tagger_scores  # noqa: E402

NER = ("conll03", "bc5cdr")


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, choices=["sst2", "trec", "agnews", "mr", "subj", *NER])
    parser.add_argument("--shots", type=int, default=1, help="seed examples per class")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="examples the LLM writes per EvoKD round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seed draws (and run seeds)")
    parser.add_argument("--llm", default="qwen2.5-coder-1.5b")
    parser.add_argument("--slm", default="all-minilm-l6-v2")
    parser.add_argument("--test-rows", type=int, default=1000, help="test rows the students are scored on")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")
    parser.add_argument("--static-runs", type=int, default=1, metavar="K",
                        help="static batches drawn per seed (other run seeds, same seed examples); a seed's static score is their mean")
    parser.add_argument("--tag", default="", help="suffix of the result file and work folders (another LLM, another machine)")


def run_evokd_bench(args) -> None:
    train, test = load_split(args.benchmark, "train"), load_split(args.benchmark, "test")
    if train is None or test is None:
        return
    test = test_rows(test, args.test_rows)
    runs = [one_seed(args, train, test, seed) for seed in args.seeds]
    result = summarise(args, runs)
    name = result_name(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs",)}, indent=2, default=float))
    print(f"wrote {RESULTS / f'{name}.json'}")


def test_rows(test, n: int):
    """The test rows the students are scored on: the same `n` for every arm and every reader of a run."""
    return test.sample(n=min(n, len(test)), random_state=0)


def static_folder(work: Path, batch: int, k: int) -> Path:
    """The k-th static draw's run folder (k = 0 keeps the name it had before `--static-runs`)."""
    return work / (f"static-{batch}" + (f"-run{k}" if k else ""))


def result_name(args) -> str:
    return f"evokd-{args.benchmark}-{args.shots}shot" + (f"-{args.tag}" if args.tag else "")


def one_seed(args, train, test, seed: int) -> dict:
    from freeal_ray.task import BENCHMARK_TASKS, get_preset

    preset = get_preset(args.benchmark if args.benchmark in NER else BENCHMARK_TASKS[args.benchmark])
    task = (entity_task if args.benchmark in NER else class_task)(preset, train, args.shots, seed)
    # The tag keeps another LLM's runs apart: a run resumes the stages it finds in its folder.
    work = ROOT / "bench" / "work" / f"{result_name(args)}-seed{seed}"
    started = time.time()
    evokd = run(args, task, work / "evokd", seed, {"loop.evolve_rounds": args.rounds, "loop.evolve_batch": args.batch})
    curve = [score(test, evokd / "evolve" / f"round-{r}" / "slm", preset) for r in range(args.rounds + 1)]
    evokd_tokens = tokens(evokd)
    static_batch = equal_token_batch(evokd, evokd_tokens, args.rounds * args.batch)
    evokd_rounds = evolve_figures(evokd)
    evokd_kept = sum(m.get("kept", 0) for m in evokd_rounds.values())
    statics = [static_run(args, task, work, seed, k, static_batch, test, preset, evokd_kept) for k in range(args.static_runs)]
    return {
        "seed": seed, "seeds_only_test": curve[0], "evokd_test": curve[-1], "evokd_curve": curve, "evokd_tokens": evokd_tokens,
        **{key: statistics.mean(s[key] for s in statics) for key in ("static_test", "static_tokens", "static_same_rows_test")},
        "evokd_kept": evokd_kept, "static_examples_written": static_batch, "evokd_examples_written": args.rounds * args.batch,
        "evokd_rounds": evokd_rounds, "static_runs": statics,
        "wall_seconds": round(time.time() - started),
    }


def static_run(args, task: dict, work: Path, seed: int, k: int, batch: int, test, preset, evokd_kept: int) -> dict:
    """The k-th static batch of a seed: the same seed examples, run seed seed + 1000k (k = 0 is the
    seed itself, so a folder from before `--static-runs` is reused)."""
    run_seed = seed + 1000 * k
    static = run(args, task, static_folder(work, batch, k), run_seed,
                 {"loop.evolve_rounds": 1, "loop.evolve_batch": batch, "loop.evolve_hard_share": 0.0})
    return {"run_seed": run_seed, "static_test": score(test, static / "slm", preset), "static_tokens": tokens(static),
            "static_same_rows_test": score(test, static_same_rows(static, evokd_kept, run_seed), preset),
            "rounds": evolve_figures(static)}


def run(args, task: dict, output: Path, seed: int, overrides: dict) -> Path:
    from freeal_ray.config import load_config
    from freeal_ray.run import run_freeal

    settings = {"task": task, "output": str(output), "llm.model": args.llm, "slm.model": args.slm,
                "loop.mode": "evokd", "loop.seed": seed, **overrides}
    settings.update(dict(kv.split("=", 1) for kv in args.set))
    run_freeal(load_config(None, settings))
    return output


def static_same_rows(static: Path, rows: int, seed: int) -> Path:
    """The static run's student refit on `rows` of its kept examples drawn at random (EvoKD's kept
    count), with the same seeds, settings and training code: static row for row against EvoKD, so
    a gap splits into what a row is worth and how many rows the tokens bought."""
    from freeal_ray import tables
    from freeal_ray.config import load_config
    from freeal_ray.pipeline import RunContext
    from freeal_ray.stages.evolve_seeds import SEEDS
    from freeal_ray.stages.evolve_train import batch_folder, train_student

    folder = f"same-rows-{rows}"
    ctx = RunContext(load_config(None, json.loads((static / "manifest.json").read_text())["config"]))
    if not ctx.path(folder, "slm").exists():
        kept = tables.read_frame(ctx.path(batch_folder(1)))
        tables.write_part(kept.sample(n=min(rows, len(kept)), random_state=seed), ctx.path(folder, "batch"), "batch")
        train_student(ctx, 1, [SEEDS, f"{folder}/batch"], f"{folder}/slm", f"Static at EvoKD's {rows} kept rows")
    return ctx.path(folder, "slm")


def class_task(preset, train, shots: int, seed: int) -> dict:
    import dataclasses

    examples = [{"text": r["text"], "label": label} for label in preset.labels
                for _, r in train[train["label"] == label].sample(n=shots, random_state=seed).iterrows()]
    task = {k: v for k, v in dataclasses.asdict(preset).items() if k != "examples"}
    return {**task, "labels": list(preset.labels), "examples": examples, "verbalizers": dict(preset.verbalizers or {})}


def entity_task(preset, train, shots: int, seed: int) -> dict:
    """`shots` sentences per entity type that hold it, each with all its entities listed; only
    sentences whose words come back unchanged from the package's word split, so every span is placed."""
    from freeal_ray import ner

    words = train["tokens"].map(list)
    whole = words.map(len).ge(5) & words.map(lambda w: ner.tokenize(" ".join(w))[0] == w)
    examples, picked = [], set()
    for etype in preset.types:
        holds = train[whole & train["tags"].map(lambda tags, t=etype: f"B-{t}" in tags) & ~train["id"].isin(picked)]
        for _, row in holds.sample(n=shots, random_state=seed).iterrows():
            picked.add(row["id"])
            tokens = list(row["tokens"])
            examples.append({"text": " ".join(tokens), "entities": [
                {"text": " ".join(tokens[a:b]), "type": t} for a, b, t in ner.entities(list(row["tags"]))]})
    return {"name": preset.name, "types": dict(preset.types), "instruction": preset.instruction,
            "input_name": preset.input_name, "examples": examples}


def score(test, folder: Path, preset) -> float:
    """The student's accuracy (classification) or entity F1 (NER) on the test rows."""
    from freeal_ray import load_model
    from freeal_ray.task import EntityTask

    if isinstance(preset, EntityTask):
        return tagger_scores(folder, test)["f1"]
    preds = [p["label"] for p in load_model(folder).predict(test["text"].tolist())]
    return quality(test["label"], preds, preset.labels)["acc"]


def tokens(output: Path) -> int:
    """Prompt plus completion tokens of every LLM call the run made (seeds, analyses, writing, labelling)."""
    stages = json.loads((output / "manifest.json").read_text())["stages"]
    return int(sum((s.get("prompt_tokens") or 0) + (s.get("output_tokens") or 0) for s in stages.values()))


def equal_token_batch(evokd: Path, evokd_tokens: int, floor: int) -> int:
    """How many static examples EvoKD's tokens buy: static writes with EvoKD's easy prompts (no
    analysis) and labels like it, so its cost per example is EvoKD's per easy example."""
    import pandas as pd

    from freeal_ray import tables

    written = pd.concat([tables.read_frame(p) for p in sorted((evokd / "evolve").glob("round-*/written"))], ignore_index=True)
    labelled = pd.concat([tables.read_frame(p) for p in sorted((evokd / "evolve").glob("round-*/answers"))], ignore_index=True)
    easy = written[~written["hard"]]
    per_example = (easy["prompt_tokens"] + easy["output_tokens"]).mean() + (labelled["prompt_tokens"] + labelled["output_tokens"]).mean()
    return max(floor, int(evokd_tokens / per_example))


def evolve_figures(output: Path) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    keep = ("written", "kept", "relabelled", "copied", "repeated", "probe_acc", "hard_acc", "easy_acc", "training_rows", "analysis")
    return {r: {k: m[k] for k in keep if k in m} for r, m in manifest.get("evolve", {}).items()}


def summarise(args, runs: list[dict]) -> dict:
    def mean(key):
        return statistics.mean(r[key] for r in runs)

    def spread(key):
        return statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0

    return {
        "benchmark": args.benchmark, "shots": args.shots, "metric": "entity_f1" if args.benchmark in NER else "acc", "rounds": args.rounds, "batch": args.batch, "seeds": args.seeds,
        "llm": args.llm, "slm": args.slm, "test_rows": args.test_rows, "static_runs_per_seed": args.static_runs,
        # how far one seed's static batches move apart: the noise a single static draw carries
        "static_within_seed_spread": statistics.mean(statistics.stdev(s["static_test"] for s in r["static_runs"])
                                                     for r in runs) if args.static_runs > 1 else None,
        **{k: mean(k) for k in ("seeds_only_test", "static_test", "evokd_test", "static_tokens", "evokd_tokens",
                                "static_same_rows_test")},
        "spread": {k: spread(k) for k in ("seeds_only_test", "static_test", "evokd_test", "static_same_rows_test")},
        **paired_gap(runs),
        "evokd_curve": [statistics.mean(r["evokd_curve"][i] for r in runs) for i in range(args.rounds + 1)],
        "runs": runs, "machine": machine(), "commit": commit(), "command": " ".join(["python", "bench/evokd.py", *sys.argv[1:]]),
    }


def paired_gap(runs: list[dict]) -> dict:
    """EvoKD minus static per seed, averaged, with its standard error: both arms of a seed share its
    seed examples, which move both scores together, so the paired gap is what tells them apart."""
    gaps = [r["evokd_test"] - r["static_test"] for r in runs]
    error = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else None
    return {"evokd_minus_static": statistics.mean(gaps), "evokd_minus_static_error": error,
            "evokd_wins": sum(g > 0 for g in gaps)}


def docs_section() -> list[str]:
    """docs/benchmarks.md's EvoKD section, from bench/results/evokd-*.json."""
    results = read_results("evokd-")
    if not results:
        return []
    lines = ["## EvoKD: the student from a few seeds, against static synthesis at equal tokens", "",
             "`python bench/evokd.py --benchmark NAME --shots K`", "",
             "The student (SLM) trained on K seed examples per class drawn from the training split (*seeds only*), "
             "on those plus one batch the LLM wrote with no feedback (*static*), and after EvoKD's rounds, where the LLM "
             "studies the student's mistakes before writing (*EvoKD*); accuracy (NER: entity F1) on the test split, mean over seeds "
             "(spread: standard deviation). Static writes as many examples as EvoKD's tokens buy. *EvoKD − static* is the "
             "gap per seed, averaged, ± its standard error, and *wins* the seeds where EvoKD is above. *Static at EvoKD's rows* "
             "refits the static student on as many of its kept examples as EvoKD kept, drawn at random: EvoKD against it "
             "is row for row, so a gap to static splits into what a row is worth and how many rows the tokens bought "
             "(— where a result predates it). A benchmark with settings after it is an ablation run with `--set`. "
             "*commit* is the code a row was measured with: the method changed between rows. *(K draws a seed)* after static: "
             "K static batches per seed (`--static-runs K`; other run seeds, the same seed examples), a seed's static score their "
             "mean; *within a seed* is the mean standard deviation of a seed's draws.", "",
             "*kept* is written examples kept after the labelling call and the copy check (summed over seeds and static draws).", "",
             "| benchmark | shots | seeds | LLM | metric | seeds only | static | EvoKD | EvoKD − static | wins | static at EvoKD's rows "
             "| EvoKD per round | static tokens | EvoKD tokens | static kept / written | EvoKD kept / written | machine | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sd, gap = r["spread"], paired_gap(r["runs"])  # from the runs: older results hold no gap
        lines.append(f"| {r['benchmark']}{_overrides(r)} | {r['shots']} | {len(r['seeds'])} | {r['llm']} | {r.get('metric', 'acc')} | {r['seeds_only_test']:.4f} ± {sd['seeds_only_test']:.3f} "
                     f"| {r['static_test']:.4f} ± {sd['static_test']:.3f}{_draws(r)} | {r['evokd_test']:.4f} ± {sd['evokd_test']:.3f} "
                     f"| {_gap(gap)} | {gap['evokd_wins']} of {len(r['runs'])} | {_same_rows(r)} | {' → '.join(f'{v:.3f}' for v in r['evokd_curve'])} | {r['static_tokens']:,.0f} | {r['evokd_tokens']:,.0f} "
                     f"| {_kept(_static_batches(r))} | {_kept(run['evokd_rounds'] for run in r['runs'])} | {r['machine']} | {r.get('commit') or '—'} |")
    return lines + [""]


def _gap(gap: dict) -> str:
    return f"{gap['evokd_minus_static']:+.3f}" + (f" ± {gap['evokd_minus_static_error']:.3f}" if gap["evokd_minus_static_error"] else "")


def _overrides(result: dict) -> str:
    """The run's `--set` overrides, from its command: such a row is an ablation, not the method."""
    import re

    found = re.findall(r"--set (\S+)", result.get("command", ""))
    return f" ({', '.join(found)})" if found else ""


def _same_rows(result: dict) -> str:
    if "static_same_rows_test" not in result:
        return "—"
    return f"{result['static_same_rows_test']:.4f} ± {result['spread']['static_same_rows_test']:.3f}"


def _draws(result: dict) -> str:
    k = result.get("static_runs_per_seed", 1)
    return f" ({k} draws a seed; within a seed ± {result['static_within_seed_spread']:.3f})" if k > 1 else ""


def _static_batches(result: dict) -> list[dict]:
    """Every static draw's per-round figures; a result from before `--static-runs` holds one a seed."""
    draws = [run["static_runs"] if "static_runs" in run else [{"rounds": run["static_rounds"]}] for run in result["runs"]]
    return [s["rounds"] for seed in draws for s in seed]


def _kept(batches) -> str:
    rounds = [m for batch in batches for m in batch.values()]
    return f"{sum(m.get('kept', 0) for m in rounds)} / {sum(m.get('written', 0) for m in rounds)}"


if __name__ == "__main__":
    run_alone(__doc__, add_arguments, run_evokd_bench)
