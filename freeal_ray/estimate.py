"""`freeal-ray estimate`: what a run will spend on the LLM, before it spends anything.

It ingests the corpus as the run would (the run then reuses that stage), builds real prompts for a
sample of rows with the run's own prompt builder (corpus rows standing in for demos, as many as
a prompt shows), counts their tokens with the annotator's own tokenizer, and projects LLM calls
and tokens per stage for the configured rounds and subset fraction. The share of rows each
refinery re-asks is not knowable before the SLM has trained: it is an assumption the user sets
(`--refine-share`), stated in the output. `--probe N` times the engine on N of the prompts.
The run's manifest later shows the estimate against what was spent (`compare`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray.errors import ConfigError
from freeal_ray.sampling import subset_size

ESTIMATE_FILE = "estimate.json"
WRITTEN = "synthesize (written demos)"


def project(n_rows: int, tokens: dict, loop, round0: str, n_labels: int, refine_share: float,
            incremental: bool, given_labels: bool = False) -> dict[str, dict]:
    """LLM calls, prompt and completion tokens per stage. `tokens` holds the mean prompt tokens
    of a few-shot, a zero-shot and a synthesis prompt, and of an answer."""
    stages: dict[str, dict] = {}

    def add(stage: str, calls: int, prompt: float, answer: float) -> None:
        stages[stage] = {"llm_calls": int(calls), "prompt_tokens": int(round(calls * prompt)),
                         "output_tokens": int(round(calls * answer))}

    if not given_labels:
        if round0 in ("confident", "mixed"):
            add("synthesize (zero-shot seed rows)", min(loop.seed_rows, n_rows), tokens["zero_shot"], tokens["answer"])
        if round0 in ("synthetic", "mixed"):
            add(WRITTEN, n_labels * loop.synth_per_class, tokens["synthesis"], tokens["written"])
    annotated = subset_size(n_rows, loop.subset_fraction) if incremental else n_rows
    if not given_labels:
        add("annotate-0", annotated, tokens["few_shot"], tokens["answer"])
    for r in range(1, loop.rounds + 1):
        add(f"refine-{r}", round(refine_share * annotated), tokens["few_shot"], tokens["answer"])
        if incremental and r < loop.rounds:
            fresh = min(subset_size(n_rows, loop.subset_fraction), n_rows - annotated)
            add(f"expand-{r}", fresh, tokens["few_shot"], tokens["answer"])
            annotated += fresh
    return stages


def totals(stages: dict[str, dict]) -> dict:
    return {k: sum(s[k] for s in stages.values()) for k in ("llm_calls", "prompt_tokens", "output_tokens")}


def estimate(config, sample: int = 200, refine_share: float = 0.1, probe: int = 0,
             price_in: float | None = None, price_out: float | None = None) -> dict:
    """Ingest, build and count a sample of real prompts, project the run; written to the
    output folder as estimate.json (no LLM call unless `probe`)."""
    from freeal_ray.pipeline import RunContext
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.stages import Ingest
    from freeal_ray.stages.synthesize import round0_demo_kind

    if not 0.0 <= refine_share <= 1.0:
        raise ConfigError(f"--refine-share must be between 0 and 1, got {refine_share}")
    ctx = RunContext(config)
    if ctx.kind.name != "classification":
        raise ConfigError("freeal-ray estimate covers text classification so far")
    ensure_ray()
    ctx.pick_annotator()
    ctx.run_stage(Ingest())
    rows = _sample_rows(ctx.path("corpus"), ctx.n_rows(), sample + ctx.shots, config.loop.seed)
    prompts, tokens, count_note = _sample_tokens(ctx, rows, sample)
    round0 = round0_demo_kind(ctx)
    stages = project(ctx.n_rows(), tokens, config.loop, round0, len(ctx.task.labels), refine_share,
                     ctx.incremental, given_labels=bool(config.corpus.llm_label_column))
    out = {"rows": ctx.n_rows(), "llm": ctx.model, "shots": ctx.shots, "prompt_style": ctx.prompt_style(),
           "round0_demos": round0, "sampled_prompts": len(prompts), "tokens_per_call": tokens,
           "assumptions": {"refine_share": refine_share, "token_count": count_note,
                           "synthesis_answer_tokens": "llm.synth_max_tokens / 2 per written demo"},
           "stages": stages, "total": totals(stages)}
    if probe:
        out["probe"] = _probe(ctx, prompts[:probe], out["total"]["llm_calls"])
    if price_in is not None or price_out is not None:
        t = out["total"]
        out["cost"] = {"price_in_per_million": price_in or 0.0, "price_out_per_million": price_out or 0.0,
                       "total": round((price_in or 0.0) * t["prompt_tokens"] / 1e6 + (price_out or 0.0) * t["output_tokens"] / 1e6, 4)}
    (ctx.out / ESTIMATE_FILE).write_text(json.dumps(out, indent=2))
    return out


def _sample_rows(corpus: Path, n_rows: int, n: int, seed: int) -> pd.DataFrame:
    """About `n` corpus rows drawn evenly, read batch by batch on the driver."""
    rng, keep = np.random.default_rng(seed), min(1.0, n / max(n_rows, 1))
    frames = []
    for batch in tables.scan(corpus, ["id", "text"]):  # one batch in memory, the sample kept
        frame = batch.to_pandas()
        frames.append(frame[rng.random(len(frame)) < keep] if keep < 1.0 else frame)
    return pd.concat(frames, ignore_index=True).head(n) if frames else pd.DataFrame(columns=["id", "text"])


def _sample_tokens(ctx, rows: pd.DataFrame, sample: int) -> tuple[list[str], dict, str]:
    """Mean prompt tokens of the run's few-shot, zero-shot and synthesis prompts over the sample,
    and of an answer."""
    from freeal_ray.prompt_fit import token_counter
    from freeal_ray.prompts import answer_choices, synthesis_prompt
    from freeal_ray.synthesis import SHOWN_PER_PROMPT

    settings = ctx.llm()
    kind_builder, kwargs = ctx.kind.prompt_builder(settings)
    labels = ctx.task.labels
    pool = rows.head(max(ctx.shots, 1) * 2)
    pool = pool.assign(label=[labels[i % len(labels)] for i in range(len(pool))])
    queries = rows.iloc[len(pool):].head(sample) if len(rows) > len(pool) else rows
    build = lambda demos, shots: kind_builder(ctx.task, demos, ctx.encoder_path(), shots, settings.max_text_chars, **kwargs)  # noqa: E731
    few = build(pool, ctx.shots)(queries.copy())["prompt"].tolist()
    zero = build(pool.head(0), 0)(queries.copy())["prompt"].tolist()
    texts = queries["text"].tolist()
    protos = [texts[i : i + SHOWN_PER_PROMPT] for i in range(0, len(texts), SHOWN_PER_PROMPT)][: len(labels)]
    synth = [synthesis_prompt(ctx.task, labels[i % len(labels)], p) for i, p in enumerate(protos)]
    count = token_counter(settings.engine_config.model_path)
    note = "the annotator's own tokenizer"
    if count is None:
        count, note = (lambda p: len(p.encode()) / 4), "approximate: a byte per 4 tokens (the model's tokenizer is not on this machine)"
    mean = lambda ps: float(np.mean([count(p) for p in ps])) if ps else 0.0  # noqa: E731
    answers = answer_choices(ctx.task, settings.prompt_style)
    tokens = {"few_shot": mean(few), "zero_shot": mean(zero), "synthesis": mean(synth),
              "answer": mean(answers) + 1, "written": ctx.cfg.llm.synth_max_tokens / 2}
    return few, tokens, note


def _probe(ctx, prompts: list[str], calls: int) -> dict:
    """Time the engine on `prompts` (real LLM calls) and project the run's LLM time from it."""
    import ray

    from freeal_ray.engine_actors import engine_pool
    from freeal_ray.prompts import answer_choices

    settings = ctx.llm()
    engine = engine_pool(settings)[0]
    choices = answer_choices(ctx.task, settings.prompt_style)
    ray.get(engine.choose.remote(prompts[:1], choices))  # the first call warms the engine up
    started = time.perf_counter()
    ray.get(engine.choose.remote(prompts, choices))
    per_call = (time.perf_counter() - started) / max(len(prompts), 1)
    return {"rows": len(prompts), "seconds_per_call": round(per_call, 3), "llm_seconds": round(per_call * calls, 1),
            "replicas": settings.replicas, "note": "LLM time alone, one engine; SLM training and Ray's start-up are not in it"}


def compare(out: Path, manifest: dict) -> dict | None:
    """The estimate a run was given against what it spent (None when it had none)."""
    path = Path(out) / ESTIMATE_FILE
    if not path.exists():
        return None
    est = json.loads(path.read_text())
    spent = {k: sum(m.get(k, 0) for m in manifest.get("rounds", {}).values()) for k in ("llm_calls", "prompt_tokens")}
    # the rounds count every labelling call (seed rows included); the demos the LLM writes are not counted by
    # the run, so they are left out of both sides
    labelling = {k: est["total"][k] - est["stages"].get(WRITTEN, {}).get(k, 0) for k in ("llm_calls", "prompt_tokens")}
    result = {"llm_calls_estimated": labelling["llm_calls"], "llm_calls_actual": spent["llm_calls"],
              "prompt_tokens_estimated": labelling["prompt_tokens"], "prompt_tokens_actual": spent["prompt_tokens"],
              "refine_share_assumed": est["assumptions"]["refine_share"], "compared": "labelling calls (round-0 demos "
              "written by the LLM are not counted by the run)"}
    if spent["prompt_tokens"]:
        result["prompt_tokens_rel_error"] = round(est["total"]["prompt_tokens"] / spent["prompt_tokens"] - 1, 4)
    return result


def describe(est: dict) -> str:
    """The estimate as the terminal shows it."""
    lines = [f"{est['rows']} rows, annotator {est['llm']} ({est['shots']} shots, {est['prompt_style']} prompts), "
             f"round-0 demos {est['round0_demos']}; tokens counted with {est['assumptions']['token_count']}",
             "", "| stage | LLM calls | prompt tokens | completion tokens |", "|---|---|---|---|"]
    for name, s in {**est["stages"], "total": est["total"]}.items():
        lines.append(f"| {name} | {s['llm_calls']:,} | {s['prompt_tokens']:,} | {s['output_tokens']:,} |")
    lines.append(f"\nassumed: each refinery re-asks {est['assumptions']['refine_share']:.0%} of the annotated rows "
                 "(--refine-share; the SLM's noisy split decides it in the run)")
    if "probe" in est:
        p = est["probe"]
        lines.append(f"probe: {p['seconds_per_call']} s per call over {p['rows']} rows -> about {p['llm_seconds'] / 60:.0f} min of LLM time")
    if "cost" in est:
        lines.append(f"cost: {est['cost']['total']:.2f} at the given prices per million tokens")
    return "\n".join(lines)
