"""evolve-label-r: a separate LLM call labels round r's written examples, constrained to the label
set with the seeds as demos, like any annotation here. An example the call labels otherwise than it
was written for (or abstains on), or that repeats a text seen before (a seed, a row the LLM was
shown, an earlier example, whole or a long piece of one; any corpus row, whole), is dropped and
counted; the rest are round r's batch."""

from __future__ import annotations

import ray

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.evokd import keep_written, text_key
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_probe import probe_folder
from freeal_ray.stages.evolve_seeds import POOL, SEEDS
from freeal_ray.stages.evolve_train import batch_folder
from freeal_ray.stages.evolve_write import written_folder


class EvolveLabel(Stage):
    name = "evolve-label-{r}"
    inputs = ("evolve/round-{r}/written",)
    outputs = ("evolve/round-{r}/answers", "evolve/round-{r}/batch")

    def run(self, ctx: RunContext, info: dict) -> None:
        r, kind = self.r, ctx.kind
        written = tables.read_frame(ctx.path(written_folder(r)))
        seeds = tables.read_frame(ctx.path(SEEDS))
        answers_folder = ctx.path(f"evolve/round-{r}/answers")
        annotate(ray.data.from_pandas(kind.evolve_label_rows(written)), seeds[["id", *kind.evolve_columns]], ctx.task,
                 ctx.llm(), ctx.encoder_path(), min(ctx.shots or 1, len(seeds)), r, str(answers_folder), total=len(written))
        answers = tables.read_frame(answers_folder).set_index("id")
        answered = kind.evolve_answers(answers[kind.label_column], written["id"])
        intended = kind.evolve_answers(written.set_index("id")["intended"], written["id"])
        seen = _seen_before(ctx, r)
        if ctx.has_corpus():
            seen |= corpus_copies(ctx.path("corpus"), written["text"])
        keep, counts = keep_written(written["text"], intended, answered, seen)
        kept = written[keep]
        batch = kind.evolve_batch(kept).assign(hard=kept["hard"].to_numpy(), round=r, origin="evokd",
                                               confidence=[answers["confidence"].get(i) if "confidence" in answers else None
                                                           for i in kept["id"]])
        tables.write_part(batch if len(batch) else batch.astype({"hard": bool}), ctx.path(batch_folder(r)), "batch")
        info.update(counts, **ctx.llm_usage(answers_folder))
        ctx.manifest.evolve_metrics(r, **counts)


def _seen_before(ctx: RunContext, r: int) -> set[str]:
    """Every text the LLM could have copied: the seeds, the pool, and each earlier round's written
    examples and the rows it was shown from them."""
    folders = [SEEDS, POOL, *[written_folder(k) for k in range(1, r)], *[probe_folder(k) for k in range(r)]]
    texts = [t for f in folders for t in tables.read_frame(ctx.path(f)).get("text", [])]
    return {k for k in map(text_key, texts) if k}


def corpus_copies(corpus, texts) -> set[str]:
    """The keys (evokd.text_key) of `texts` that a row of the corpus table has too, found in one
    pass over its text column on the driver: the written batch is small, the corpus may not be."""
    keys = {k for k in map(text_key, texts) if k}
    found: set[str] = set()
    for batch in tables.scan(corpus, ["text"]):
        found |= keys.intersection(map(text_key, batch.column("text").to_pylist()))
    return found
