"""FreeAL, then EvoKD rounds on its SLM, against FreeAL alone, on the very same run.

    python bench/freeal_evokd.py --run bench/work/mr-2000/run-2000-0.5b --benchmark mr [--rounds 2]

A finished FreeAL run is copied and resumed with `loop.evolve_rounds` (a setting a resumed run may
change): the same corpus, labels, demos and SLM, so the EvoKD rounds are the only difference. Their
first student is FreeAL's SLM; the LLM studies its mistakes on FreeAL's clean, surest labels, and each
student trains on FreeAL's labels plus every batch kept so far. FreeAL's SLM and each round's student
are scored on the benchmark's test split; the output labels must stay FreeAL's.

The control: each round's student refit on FreeAL's labels alone, with that round's seed and
settings and no written rows. FreeAL's own SLM trained on the labels before its last refinery, and
refits on one set of labels spread by a few points, so the written rows' worth is each round's
student against its control, not against FreeAL's SLM. Results: bench/results/freeal-evokd-<benchmark>.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, load_split, machine, read_results, run_alone  # noqa: E402
from evokd import evolve_figures, score  # noqa: E402


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="a finished FreeAL run folder (it is copied, never changed)")
    parser.add_argument("--benchmark", required=True, choices=["sst2", "trec", "agnews", "mr", "subj"])
    parser.add_argument("--rounds", type=int, default=2, help="EvoKD rounds after FreeAL")
    parser.add_argument("--test-rows", type=int, default=1000, help="test rows the SLMs are scored on")


def run_freeal_evokd_bench(args) -> None:
    from freeal_ray.config import load_config
    from freeal_ray.run import run_freeal
    from freeal_ray.task import BENCHMARK_TASKS, get_preset

    test = load_split(args.benchmark, "test")
    if test is None:
        return
    test = test.sample(n=min(args.test_rows, len(test)), random_state=0)
    source = Path(args.run).resolve()
    manifest = json.loads((source / "manifest.json").read_text())
    if "finalize" not in manifest["stages"]:
        sys.exit(f"{source} is not a finished FreeAL run (no finalize stage in its manifest)")
    work = ROOT / "bench" / "work" / f"freeal-evokd-{args.benchmark}-{source.name}"
    if not work.exists():
        shutil.copytree(source, work)
    config = manifest["config"]
    config.update(output=str(work))
    config["loop"]["evolve_rounds"] = args.rounds
    labels_before = _labels(work)
    started = time.time()
    run_freeal(load_config(None, config))
    preset = get_preset(BENCHMARK_TASKS[args.benchmark])
    last = manifest["stages"]["finalize"]["rounds"]
    curve = [score(test, work / "evolve" / f"round-{r}" / "slm", preset) for r in range(args.rounds + 1)]
    control = [score(test, work / folder, preset) for folder in refit_controls(config, args.rounds)]
    stages = json.loads((work / "manifest.json").read_text())["stages"]
    result = {
        "benchmark": args.benchmark, "rounds": args.rounds, "batch": config["loop"]["evolve_batch"],
        "llm": config["llm"]["model"], "slm": config["slm"]["model"], "test_rows": len(test), "freeal_rounds": last,
        "freeal_test": score(test, work / f"round-{last}" / "slm", preset), "freeal_evokd_test": curve[-1],
        "evokd_curve": curve, "control_curve": control, "control_test": control[-1],
        "evokd_minus_control": statistics.mean(c - k for c, k in zip(curve[1:], control)), "evokd_tokens": sum((s.get("prompt_tokens") or 0) + (s.get("output_tokens") or 0)
                                                  for k, s in stages.items() if k.startswith("evolve")),
        "labels_unchanged": _labels(work) == labels_before, "evokd_rounds": evolve_figures(work),
        "wall_seconds": round(time.time() - started), "source_run": str(source),
        "machine": machine(), "commit": commit(), "command": " ".join(["python", "bench/freeal_evokd.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"freeal-evokd-{args.benchmark}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "evokd_rounds"}, indent=2, default=float))
    print(f"wrote {path}")


def refit_controls(config: dict, rounds: int) -> list[str]:
    """Round r's student (r = 1..rounds) refit on FreeAL's labels alone: the same seed, settings and
    training code, none of the written rows. Each fit is kept, so a re-run scores it again."""
    from freeal_ray.config import load_config
    from freeal_ray.pipeline import RunContext
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.stages.evolve_train import history_folders, train_student

    ensure_ray()
    ctx = RunContext(load_config(None, config))
    folders = [f"evolve-control/round-{r}/slm" for r in range(1, rounds + 1)]
    for r, folder in enumerate(folders, start=1):
        if not ctx.path(folder).exists():
            train_student(ctx, r, history_folders(ctx, 0), folder, f"Control: FreeAL's labels alone, round {r}")
    return folders


def _labels(run: Path) -> dict:
    from freeal_ray import tables

    frame = tables.read_frame(run / "labels")
    return dict(zip(frame["id"], frame["label"]))


def docs_section() -> list[str]:
    """docs/benchmarks.md's FreeAL-then-EvoKD section, from bench/results/freeal-evokd-*.json."""
    results = read_results("freeal-evokd-")
    if not results:
        return []
    lines = ["## FreeAL, then EvoKD rounds, against FreeAL alone", "",
             "`python bench/freeal_evokd.py --run FINISHED_FREEAL_RUN --benchmark NAME --rounds R`", "",
             "The same finished FreeAL run resumed with R EvoKD rounds: its SLM is the first student, the LLM studies "
             "the student's mistakes on FreeAL's clean labels and writes examples for them, and each student trains on "
             "FreeAL's labels plus every kept batch. SLM accuracy on the test split; the output labels stay FreeAL's. "
             "FreeAL's own last SLM trained on the labels before its last refinery, while every EvoKD student trains on "
             "the final labels: part of any difference is that, not the written examples (*kept* says how many joined). "
             "*Control* refits each round's student on FreeAL's labels alone (same seed and settings, no written rows); "
             "*EvoKD − control* is the mean over rounds of the student minus its control: what the written rows add.", "",
             "| benchmark | FreeAL rounds | LLM | FreeAL SLM | FreeAL + EvoKD SLM | per EvoKD round | control per round "
             "| EvoKD − control | EvoKD tokens | kept / written | labels unchanged | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rounds = r["evokd_rounds"].values()
        kept = f"{sum(m.get('kept', 0) for m in rounds)} / {sum(m.get('written', 0) for m in rounds)}"
        lines.append(f"| {r['benchmark']} | {r['freeal_rounds']} | {r['llm']} | {r['freeal_test']:.4f} | "
                     f"{r['freeal_evokd_test']:.4f} | {' → '.join(f'{v:.3f}' for v in r['evokd_curve'])} | "
                     f"{_control(r)} | {_gap(r)} | {r['evokd_tokens']:,} | {kept} | {r['labels_unchanged']} | {r['machine']} |")
    return lines + [""]


def _control(result: dict) -> str:
    curve = result.get("control_curve")
    return " → ".join(f"{v:.3f}" for v in curve) if curve else "not run"


def _gap(result: dict) -> str:
    gap = result.get("evokd_minus_control")
    return f"{gap:+.3f}" if gap is not None else "—"


if __name__ == "__main__":
    run_alone(__doc__, add_arguments, run_freeal_evokd_bench)
