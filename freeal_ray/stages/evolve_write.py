"""evolve-write-r: the LLM writes round r's batch from its analysis (with the rows it quotes cut
out, or a small LLM writes them back as its "hard" examples): hard examples for the groups the
student gets wrong (classes, or entity types for NER; in proportion to its mistakes there, and to
how much of what was written for them the labelling call kept; a hard prompt names one of the
student's mistakes involving its group: a class taken for another or the other way round; for NER
also a missed or made-up entity), easy ones for the groups with the fewest examples written so far.
Each prompt shows a few pool rows as the kind of text to write. A text that copies one seen before
(a seed, a shown row, an earlier example, a corpus row) is written again once, with no text shown;
a copy then left is flagged (`copied`) and the next stage drops it unlabelled. It only writes:
labelling is the next stage's separate call."""

from __future__ import annotations

import random

import pandas as pd

from freeal_ray import tables
from freeal_ray.evokd import confused_with, copied, rewrite_copies, text_key, without_quotes, writing_plan
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_probe import probe_folder
from freeal_ray.stages.evolve_seeds import POOL, SEEDS
from freeal_ray.stages.evolve_train import batch_folder

STYLE_TEXTS = 3


def written_folder(r: int) -> str:
    return f"evolve/round-{r}/written"


def answers_folder(r: int) -> str:
    """Where round r's labelling call (evolve-label) writes its answers."""
    return f"evolve/round-{r}/answers"


class EvolveWrite(Stage):
    name = "evolve-write-{r}"
    inputs = ("evolve/round-{prev}/probe",)
    outputs = ("evolve/round-{r}/written",)

    def run(self, ctx: RunContext, info: dict) -> None:
        loop, r = ctx.cfg.loop, self.r
        seen = ctx.manifest.stage(f"evolve-analyse-{r}")
        plan = round_plan(ctx, r)
        confusion = confused_with(plan, seen.get("confusions", []), loop.seed + r)
        probe = tables.read_frame(ctx.path(probe_folder(r - 1)))
        # Texts of the kind to write are real rows (the pool), never the writer's own: shown its
        # last batch, a small LLM writes it again and each round narrows (TREC at 0.5B: by round 4,
        # questions about movies with a number in the title).
        real = tables.read_frame(ctx.path(POOL))["text"].tolist()
        shown = probe.loc[probe["id"].isin([*seen.get("shown_wrong", []), *seen.get("shown_right", [])]), "text"]
        rng = random.Random(loop.seed + r)
        analysis = without_quotes(seen.get("analysis", ""), shown)
        desc = f"EvoKD writing, round {r}"

        def write(at, what, n_style):
            style = [rng.sample(real, min(n_style, len(real))) for _ in at]
            return ctx.kind.evolve_write([plan[i] for i in at], analysis, style, ctx.llm(), ctx.cfg.llm, f"{desc}{what}",
                                         confusion=[confusion[i] for i in at])

        written, prompt_tokens, output_tokens = write(range(len(plan)), "", STYLE_TEXTS)
        seen = seen_before(ctx, r, written["text"])
        echo = f"{ctx.kind.evolve_weak_lead} {analysis}"  # answered with its prompt (TREC at 0.5B: 2 of 8 hard ones)
        # A copy is written again with no text shown: a small LLM shown other texts copies those
        # instead (CoNLL03 1-shot at 0.5B, where the pool is the four seeds: 40 of 64 dropped).
        written, prompt_tokens, output_tokens, again = rewrite_copies(
            written, prompt_tokens, output_tokens, seen, lambda at: write(at, ", copies again", 0), prompt=echo)
        if again and ctx.has_corpus():  # the rewritten texts may repeat corpus rows the first ones did not
            seen |= corpus_copies(ctx.path("corpus"), written["text"])
        written.insert(0, "id", [f"evokd-{r}-{i}" for i in range(len(plan))])
        written["copied"] = copied(written["text"], seen, prompt=echo)  # the labelling stage drops these unpaid
        written["group"], written["hard"] = [group for group, _ in plan], [hard for _, hard in plan]
        written["confusion"] = [list(pair) if pair else None for pair in confusion]  # (reference, answer) a hard prompt named
        written["prompt_tokens"], written["output_tokens"] = prompt_tokens, output_tokens
        tables.write_part(written, ctx.path(written_folder(r)), "written")
        info.update(written=len(written), hard=int(written["hard"].sum()), llm_calls=len(plan) + again, rewritten=again,
                    prompt_tokens=int(pd.Series(prompt_tokens, dtype=float).fillna(0).sum()),
                    output_tokens=int(pd.Series(output_tokens, dtype=float).fillna(0).sum()))


def round_plan(ctx: RunContext, r: int) -> list[tuple[str, bool]]:
    """(group, hard) per example of round r's batch (evokd.writing_plan), from the round's analysis
    stage and what earlier rounds wrote: a round with no analysis (no mistake to study) writes easy
    ones only, with no weakness named to aim hard ones at."""
    loop, seen = ctx.cfg.loop, ctx.manifest.stage(f"evolve-analyse-{r}")
    hard_share = loop.evolve_hard_share if seen.get("analysis", "").strip() else 0.0
    tried, kept_share = earlier_writing(ctx, r)
    return writing_plan(ctx.kind.evolve_groups(), seen.get("wrong_labels", []), seen.get("wrong_preds", []),
                        seen.get("class_f1", {}), loop.evolve_batch, hard_share, loop.seed + r, tried=tried, kept_share=kept_share)


def earlier_writing(ctx: RunContext, r: int) -> tuple[dict[str, int], dict[str, float]]:
    """Per group before round r: the examples written for it (the seeds included), and the share of
    them the labelling call kept, as (kept + 1) / (labelled + 2) so one early drop does not decide a
    group. A copy dropped unlabelled counts as written but not as labelled."""
    seeds = tables.read_frame(ctx.path(SEEDS))
    tried = pd.Series(seeds.get("label", []), dtype=object).value_counts().to_dict()
    labelled: dict[str, int] = {}
    kept: dict[str, int] = {}
    for k in range(1, r):
        written = tables.read_frame(ctx.path(written_folder(k)))
        if "group" not in written:  # written before groups were stored: a class run's intent is its group
            if not written["intended"].map(lambda v: isinstance(v, str)).all():
                continue
            written = written.assign(group=written["intended"])
        # The labelling call's own answers say what it was asked: a copy is dropped unasked.
        asked = set(tables.read_frame(ctx.path(answers_folder(k))).get("id", []))
        batch_ids = set(tables.read_frame(ctx.path(batch_folder(k))).get("id", []))
        for i, g in zip(written["id"], written["group"]):
            tried[g] = tried.get(g, 0) + 1
            if i in asked:
                labelled[g] = labelled.get(g, 0) + 1
                kept[g] = kept.get(g, 0) + (i in batch_ids)
    return tried, {g: (kept[g] + 1) / (n + 2) for g, n in labelled.items()}


def seen_before(ctx: RunContext, r: int, written) -> set[str]:
    """Keys (evokd.text_key) of every text round r's writer could have copied: the seeds, the pool,
    each earlier round's written examples and the rows it was shown from them, and the corpus rows
    `written` repeats whole."""
    folders = [SEEDS, POOL, *[written_folder(k) for k in range(1, r)], *[probe_folder(k) for k in range(r)]]
    texts = [t for f in folders for t in tables.read_frame(ctx.path(f)).get("text", [])]
    seen = {k for k in map(text_key, texts) if k}
    return seen | corpus_copies(ctx.path("corpus"), written) if ctx.has_corpus() else seen


def corpus_copies(corpus, texts) -> set[str]:
    """The keys (evokd.text_key) of `texts` that a row of the corpus table has too, found in one
    pass over its text column on the driver: the written batch is small, the corpus may not be."""
    keys = {k for k in map(text_key, texts) if k}
    found: set[str] = set()
    for batch in tables.scan(corpus, ["text"]):
        found |= keys.intersection(map(text_key, batch.column("text").to_pylist()))
    return found
