"""evolve-label-r: a separate LLM call labels round r's written examples, constrained to the label
set with the seeds as demos, like any annotation here. An example that repeats a text seen before
(a seed, a row the LLM was shown, an earlier example, whole or a long piece of one; any corpus row,
whole) is dropped unlabelled; one the call labels otherwise than it was written for (or abstains
on; the task kind's evolve_agrees: for NER, the entities of the type it was written for) is
dropped too. Both are counted; the rest are round r's batch."""

from __future__ import annotations

import pandas as pd
import ray

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.evokd import copied, keep_written
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_seeds import SEEDS
from freeal_ray.stages.evolve_train import batch_folder
from freeal_ray.stages.evolve_write import answers_folder, seen_before, written_folder


class EvolveLabel(Stage):
    name = "evolve-label-{r}"
    inputs = ("evolve/round-{r}/written",)
    outputs = ("evolve/round-{r}/answers", "evolve/round-{r}/batch")

    def run(self, ctx: RunContext, info: dict) -> None:
        r, kind = self.r, ctx.kind
        written = tables.read_frame(ctx.path(written_folder(r)))
        seeds = tables.read_frame(ctx.path(SEEDS))
        answers_at = ctx.path(answers_folder(r))
        copies = written_copies(ctx, r, written)
        fresh = written[~copies]  # a copy is dropped whatever its label: not paid for
        annotate(ray.data.from_pandas(kind.evolve_label_rows(fresh)), seeds[["id", *kind.evolve_columns]], ctx.task,
                 ctx.llm(), ctx.encoder_path(), min(ctx.shots or 1, len(seeds)), r, str(answers_at), total=len(fresh))
        answers = tables.read_frame(answers_at)
        answers = answers.set_index("id") if len(answers) else pd.DataFrame({kind.label_column: []})
        answered = kind.evolve_answers(answers[kind.label_column], written["id"])
        intended = kind.evolve_answers(written.set_index("id")["intended"], written["id"])
        groups = written["group"] if "group" in written else [None] * len(written)  # not stored before: the intent's
        agrees = [kind.evolve_agrees(w, a, g) for w, a, g in zip(intended, answered, groups)]
        keep, counts = keep_written(written["text"], agrees, copies)
        kept = written[keep]
        batch = kind.evolve_batch(kept).assign(hard=kept["hard"].to_numpy(), round=r, origin="evokd",
                                               confidence=[answers["confidence"].get(i) if "confidence" in answers else None
                                                           for i in kept["id"]])
        tables.write_part(batch if len(batch) else batch.astype({"hard": bool}), ctx.path(batch_folder(r)), "batch")
        info.update(counts, **ctx.llm_usage(answers_at))
        ctx.manifest.evolve_metrics(r, **counts)


def written_copies(ctx: RunContext, r: int, written: pd.DataFrame):
    """Which written examples copy a text seen before: the flag evolve-write stored, or for a
    written table from before it stored one (a resumed older run), found again here."""
    if "copied" in written:
        return written["copied"].astype(bool).to_numpy()
    return copied(written["text"], seen_before(ctx, r, written["text"]))
