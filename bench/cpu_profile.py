"""What each CPU lever buys the annotator on this machine, and what the chosen profile costs in accuracy.

    python bench/cpu_profile.py levers [--rows 48]     # one engine per lever, each in its own process
    python bench/cpu_profile.py stage [--rows 64]      # the annotation stage (Ray) with all cores vs one
    python bench/cpu_profile.py accuracy [--rows 100]  # the CPU profiles against each other, MR and AG News
    python bench/cpu_profile.py quickstart --seconds S # record a timed fresh-clone quickstart

Levers: compute threads (1 vs every core), dtype (bfloat16 vs float32), the 0.5B vs 1.5B annotator,
shots per prompt (10, 4, 0), synthesis answer length, vLLM's prefix cache, and a weight-only
quantized path. A lever's probe loads `VLLMEngine` as the loop does, labels MR test reviews with
the nearest demos from 200 gold-labelled MR training rows (the default encoder, FAISS), and times
the constrained answers after a warm-up batch: rows/s, prompt tokens/s, and accuracy on those rows.

Everything lands in bench/results/cpu-profile.json (top level: `cpu`, `all_cores_vs_one_ratio`,
`quickstart_seconds`, `levers`, `accuracy`), each command adding its part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
DATA = Path(os.environ.get("FREEAL_RAY_DATA", ROOT.parent / "shared" / "data"))
# Another machine's figures go to a file of their own (FREEAL_RAY_CPU_PROFILE=cpu-profile-NAME.json), so
# one file never mixes two CPUs; the docs show every such file.
RESULT = ROOT / "bench" / "results" / os.environ.get("FREEAL_RAY_CPU_PROFILE", "cpu-profile.json")
WARMUP_ROWS = 8

# name -> probe arguments; eager=False: as measured, with torch.compile (vLLM's default then)
LEVERS = {
    "1.5b-bf16-all-cores-10-shot": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=10),
    "1.5b-bf16-one-core-10-shot": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=1, shots=10),
    "1.5b-fp32-all-cores-10-shot": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="float32", threads=0, shots=10),
    "1.5b-bf16-all-cores-4-shot": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=4),
    "1.5b-bf16-all-cores-0-shot": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=0),
    "1.5b-bf16-all-cores-10-shot-no-prefix-cache": dict(eager=False, model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0,
                                                        shots=10, prefix_cache=False),
    "0.5b-bf16-all-cores-10-shot": dict(eager=False, model="qwen2.5-coder-0.5b", dtype="bfloat16", threads=0, shots=10),
    "0.5b-bf16-all-cores-4-shot": dict(eager=False, model="qwen2.5-coder-0.5b", dtype="bfloat16", threads=0, shots=4),
    "0.5b-fp32-all-cores-4-shot": dict(eager=False, model="qwen2.5-coder-0.5b", dtype="float32", threads=0, shots=4),
    "0.5b-bf16-all-cores-4-shot-eager": dict(model="qwen2.5-coder-0.5b", dtype="bfloat16", threads=0, shots=4, eager=True),
    "1.5b-bf16-all-cores-4-shot-eager": dict(model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=4, eager=True),
    "1.5b-fp32-all-cores-4-shot-eager": dict(model="qwen2.5-coder-1.5b", dtype="float32", threads=0, shots=4, eager=True),
    "0.5b-fp32-all-cores-4-shot-eager": dict(model="qwen2.5-coder-0.5b", dtype="float32", threads=0, shots=4, eager=True),
    "0.5b-bf16-all-cores-4-shot-fp8-weights": dict(eager=False, model="qwen2.5-coder-0.5b", dtype="bfloat16", threads=0, shots=4,
                                                   quantization="fp8"),
}


def cpu_name() -> str:
    from freeal_ray.engines import _cpu_flags

    info = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = _cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "avx2", "avx512f"})
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}), "
            f"{os.cpu_count()} cores, flags {' '.join(native)}")


def read_split(benchmark: str, split: str, n: int, seed: int) -> pd.DataFrame:
    frame = pd.read_json(DATA / benchmark / f"{split}.jsonl", lines=True)
    return frame.sample(n=min(n, len(frame)), random_state=seed).reset_index(drop=True)[["id", "text", "label"]]


def probe(model: str, dtype: str, threads: int, shots: int, rows: int, benchmark: str = "mr",
          prefix_cache: bool = True, synth_tokens: int = 0, quantization: str | None = None,
          eager: bool = True, batch: int = 32) -> dict:
    """One engine, built as the loop builds it, timed on `rows` rows after a warm-up batch."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as Ray leaves it in a one-CPU actor
    from freeal_ray.workers import PromptBuilder
    from freeal_ray.engines import EngineConfig, VLLMEngine
    from freeal_ray.model_store import resolve_encoder, resolve_llm
    from freeal_ray.prompts import answer_choices, synthesis_prompt
    from freeal_ray.task import get_preset

    task = get_preset({"mr": "sentiment", "agnews": "news-topic", "sst2": "sentiment", "trec": "question-type"}[benchmark])
    extra = {"enable_prefix_caching": prefix_cache} if not prefix_cache else {}
    if quantization:
        extra["quantization"] = quantization
    # the engine starts without torch.compile on a CPU (eager); eager=False asks for vLLM's compiled mode,
    # which the levers measured before the engine dropped it (their "eager": false)
    extra["compilation_config"] = 0 if eager else 3
    config = EngineConfig(model_path=str(resolve_llm(model)), dtype=dtype, cpu_threads=threads, kv_cache_gib=2,
                          max_model_len=2048, extra=extra)
    started = time.perf_counter()
    engine = VLLMEngine(config)
    load_s = time.perf_counter() - started
    demos = read_split(benchmark, "train", 200, seed=0).assign(origin="corpus")
    test = read_split(benchmark, "test", rows + WARMUP_ROWS, seed=1)
    builder = PromptBuilder(task, demos, str(resolve_encoder("all-minilm-l6-v2")), shots, 1000)
    prompts = builder(test[["id", "text"]])["prompt"].tolist()
    choices = answer_choices(task)
    engine.choose(prompts[:WARMUP_ROWS], choices)
    started = time.perf_counter()
    answers = []
    for i in range(WARMUP_ROWS, len(prompts), batch):
        answers += engine.choose(prompts[i : i + batch], choices)
    seconds = time.perf_counter() - started
    gold = test["label"].tolist()[WARMUP_ROWS:]
    correct = sum(a.index is not None and task.labels[a.index] == g for a, g in zip(answers, gold))
    out = {"model": model, "dtype": dtype, "threads": engine.threads, "shots": shots, "rows": len(answers),
           "benchmark": benchmark, "prefix_cache": prefix_cache, "quantization": quantization,
           "eager": eager, "batch": batch,
           "load_s": round(load_s, 1), "rows_per_s": round(len(answers) / seconds, 3),
           "s_per_row": round(seconds / len(answers), 3),
           "prompt_tokens_per_row": round(sum(a.prompt_tokens for a in answers) / len(answers), 1),
           "prompt_tokens_per_s": round(sum(a.prompt_tokens for a in answers) / seconds, 1),
           "accuracy": round(correct / len(answers), 4)}
    if synth_tokens:
        shown = test["text"].tolist()[:5]
        synth = [synthesis_prompt(task, task.labels[i % len(task.labels)], shown) for i in range(8)]
        started = time.perf_counter()
        engine.generate(synth, synth_tokens, 0.8, ["\n"])
        out.update(synth_max_tokens=synth_tokens, s_per_demo=round((time.perf_counter() - started) / len(synth), 3))
    return out


def run_probe_process(args: dict, timeout: int = 1800) -> dict:
    """A probe in a fresh process: each engine gets the machine to itself and frees it after."""
    cmd = [sys.executable, __file__, "probe", json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        said = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in said if "Error" in line] or said[-1:] or [f"exit {done.returncode}"]
        return {**args, "error": errors[-1:]}
    return json.loads(lines[-1])


def update_result(**parts) -> dict:
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    data.update(parts, cpu=cpu_name())
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(data, indent=2) + "\n")
    return data


def cmd_levers(a) -> None:
    names = a.only or list(LEVERS)
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    levers = data.get("levers", {})
    for name in names:
        args = {**LEVERS[name], "rows": a.rows}
        if name in ("1.5b-bf16-all-cores-10-shot", "0.5b-bf16-all-cores-10-shot"):
            args["synth_tokens"] = 64
        if name in ("1.5b-bf16-all-cores-4-shot", "0.5b-bf16-all-cores-4-shot"):
            args["synth_tokens"] = 32
        print(f"lever {name} ...", flush=True)
        levers[name] = run_probe_process(args)
        print(json.dumps(levers[name]), flush=True)
        update_result(levers=levers)


def stage_seconds(model: str, threads: int, rows: int) -> dict:
    """The annotation stage as the loop runs it (Ray Data, prompt builder, engine actor, Parquet
    parts) on MR test rows with 10 nearest gold MR demos; timed after a warm-up stage on other rows."""
    import tempfile

    import ray

    from freeal_ray.annotation import annotate
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.model_store import resolve_encoder

    ensure_ray()
    config = load_config(None, {"task": "sentiment", "corpus.path": "unused", "llm.model": model,
                                "llm.cpu_threads": threads, "llm.kv_cache_gib": 2})
    run = FreeALRun(config)
    settings, encoder = run.ctx.llm(), str(resolve_encoder(config.slm.model))
    demos = read_split("mr", "train", 200, seed=0).assign(origin="corpus")
    test = read_split("mr", "test", rows + WARMUP_ROWS, seed=1)
    from freeal_ray.engine_actors import engine_pool

    with tempfile.TemporaryDirectory() as tmp:
        annotate(ray.data.from_pandas(test.iloc[:WARMUP_ROWS]), demos, run.task, settings, encoder, 10, 0, f"{tmp}/warm")
        engine = engine_pool(settings)[0]
        busy_before = ray.get(engine.busy_seconds.remote())
        started = time.perf_counter()
        annotate(ray.data.from_pandas(test.iloc[WARMUP_ROWS:]), demos, run.task, settings, encoder, 10, 0, f"{tmp}/rows",
                 total=rows)
        seconds = time.perf_counter() - started
        busy = ray.get(engine.busy_seconds.remote()) - busy_before
    ray.shutdown()
    return {"model": model, "threads": threads or os.cpu_count(), "rows": rows, "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds, 3), "engine_busy_s": round(busy, 1),
            "engine_rows_per_busy_s": round(rows / busy, 3)}


def cmd_stage(a) -> None:
    runs = {}
    variants = {"one_core": (1, {}), "all_cores": (0, {}), "all_cores_passive_omp": (0, {"OMP_WAIT_POLICY": "PASSIVE"})}
    for name, (threads, env) in variants.items():
        done = subprocess.run([sys.executable, __file__, "stage-probe", a.model, str(threads), str(a.rows)],
                              capture_output=True, text=True, timeout=1800, env={**os.environ, **env})
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"stage probe failed: {done.stderr[-2000:]}")
        runs[name] = {**json.loads(lines[-1]), **env}
        print(name, lines[-1], flush=True)
    ratio = runs["all_cores"]["rows_per_s"] / runs["one_core"]["rows_per_s"]
    update_result(stage=runs, all_cores_vs_one_ratio=round(ratio, 2))
    print(f"annotation stage, all cores vs one: {ratio:.2f}x")


PROFILE_EXPLAINED = """
## The annotator on a CPU: what each lever buys

`python bench/cpu_profile.py levers`, `... stage`, `... accuracy`

Each lever is one engine built as the loop builds it, in its own process, labelling MR test reviews
with the nearest of 200 gold-labelled MR training rows as demos; rows/s are timed after a warm-up
batch, and *acc* is on those rows (gold demos: a measure of the lever, not of the loop's labels).
*compiled* says whether vLLM's torch.compile ran (its default until this profile: the engine now starts
without it on a CPU), and *load s* includes it. `llm.model: auto` picks from these figures
(freeal_ray/profile.py). On this CPU's native bfloat16 the 1.5B is the CPU default; a CPU without it
runs float32 (the fp32 lines: 2x slower here, more on AVX2-only CPUs).
"""


def docs_section() -> list[str]:
    """docs/benchmarks.md's CPU-profile section, from cpu-profile.json and any other machine's
    cpu-profile-NAME.json (bench/quality.py docs)."""
    main = ROOT / "bench" / "results" / "cpu-profile.json"
    others = sorted(p for p in main.parent.glob("cpu-profile-*.json"))
    parts = machine_section(json.loads(main.read_text())) if main.exists() else []
    for path in others:
        r = json.loads(path.read_text())
        parts += [f"The same levers on another machine (`FREEAL_RAY_CPU_PROFILE={path.name} python bench/cpu_profile.py "
                  f"levers ...`), {r['cpu']}:\n", levers_table(r)]
    return parts


def levers_table(r: dict) -> str:
    lines = ["| lever | model | dtype | threads | shots | compiled | rows/s | s/row | prompt tokens/s | acc | load s | s/demo (synthesis) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in r.get("levers", {}).items():
        if "error" in p:
            lines.append(f"| {name} | {p['model']} | {p['dtype']} |  | {p['shots']} |  | failed: {' '.join(p['error'])[:200]} |||||")
            continue
        synth = f"{p['s_per_demo']} ({p['synth_max_tokens']} tokens)" if "s_per_demo" in p else ""
        lines.append(f"| {name} | {p['model']} | {p['dtype']} | {p['threads']} | {p['shots']} | "
                     f"{'no' if p.get('eager') else 'yes'} | {p['rows_per_s']} | "
                     f"{p['s_per_row']} | {p['prompt_tokens_per_s']} | {p['accuracy']} | {p['load_s']} | {synth} |")
    return "\n".join(lines) + "\n"


def machine_section(r: dict) -> list[str]:
    parts = [PROFILE_EXPLAINED, f"On {r['cpu']}.\n", levers_table(r)]
    if "stage" in r:
        st = r["stage"]
        busy = lambda v: (f" (engine busy {v['engine_busy_s']} of {v['seconds']} s, {v['engine_rows_per_busy_s']} rows "  # noqa: E731
                          "per busy second)") if "engine_busy_s" in v else ""
        variants = "; ".join(f"{name.replace('_', ' ')}: {v['rows_per_s']} rows/s{busy(v)}" for name, v in st.items())
        parts.append(f"The annotation stage (Ray Data, prompt builder, engine actor, Parquet parts; {st['one_core']['model']}, "
                     f"{st['one_core']['rows']} rows, 10 shots), timed after a warm-up stage: {variants}. Every core "
                     f"against one: **{r['all_cores_vs_one_ratio']}x**.\n")
    for bench, acc in r.get("accuracy", {}).items():
        # rows/s are left out: these runs may share the machine (their speed is the levers' table)
        parts.append(f"Accuracy on {bench} ({next(iter(acc.values())).get('rows', '?')} test rows, the same demo pool): " + ", ".join(
            f"{name} **{v['accuracy']}**" for name, v in acc.items() if "accuracy" in v) + ".\n")
    if "quickstart_seconds" in r:
        parts.append(f"`time bash scripts/quickstart.sh` from a fresh clone: **{r['quickstart_seconds']:.0f} s**.\n")
    return parts


ACCURACY_PROFILES = {
    "default (1.5b, bf16, 10 shots)": dict(model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=10),
    "1.5b, bf16, 4 shots": dict(model="qwen2.5-coder-1.5b", dtype="bfloat16", threads=0, shots=4),
    "no-bf16 profile (0.5b, fp32, 4 shots)": dict(model="qwen2.5-coder-0.5b", dtype="float32", threads=0, shots=4),
}


def cmd_accuracy(a) -> None:
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    accuracy = data.get("accuracy", {})
    for bench in ("mr", "agnews"):
        for name, args in ACCURACY_PROFILES.items():
            print(f"accuracy {bench} {name} ...", flush=True)
            accuracy.setdefault(bench, {})[name] = run_probe_process({**args, "rows": a.rows, "benchmark": bench})
            print(json.dumps(accuracy[bench][name]), flush=True)
            update_result(accuracy=accuracy)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="internal: one engine, JSON arguments")
    p.add_argument("args")
    lv = sub.add_parser("levers", help="one probe per lever")
    lv.add_argument("--rows", type=int, default=48)
    lv.add_argument("--only", action="append", choices=list(LEVERS))
    ac = sub.add_parser("accuracy", help="the CPU profiles' accuracy on MR and AG News")
    ac.add_argument("--rows", type=int, default=100)
    st = sub.add_parser("stage", help="the annotation stage with every core vs one")
    st.add_argument("--rows", type=int, default=64)
    st.add_argument("--model", default="qwen2.5-coder-0.5b")
    sp = sub.add_parser("stage-probe", help="internal: one timed stage")
    sp.add_argument("model")
    sp.add_argument("threads", type=int)
    sp.add_argument("rows", type=int)
    qs = sub.add_parser("quickstart", help="record a timed quickstart")
    qs.add_argument("--seconds", type=float, required=True, help="wall seconds of `time bash scripts/quickstart.sh`")
    a = parser.parse_args(argv)
    if a.command == "stage":
        cmd_stage(a)
    elif a.command == "accuracy":
        cmd_accuracy(a)
    elif a.command == "stage-probe":
        print(json.dumps(stage_seconds(a.model, a.threads, a.rows)))
    elif a.command == "quickstart":
        update_result(quickstart_seconds=a.seconds)
    elif a.command == "probe":
        print(json.dumps(probe(**json.loads(a.args))))
    elif a.command == "levers":
        if not (DATA / "mr" / "test.jsonl").exists():
            print(f"skipped: MR data not found under {DATA}")
            return
        cmd_levers(a)


if __name__ == "__main__":
    main()
