"""finalize: the output. `labels/` holds the last round's labels, abstentions filled by its SLM
(incremental mode: the SLM labels every row the LLM never saw, `labels/slm`), with rows that
repeat another's text given its label (`labels/duplicates`); `slm/` the last round's SLM; the
report is written from the manifest."""

from __future__ import annotations

import shutil

from freeal_ray import tables
from freeal_ray import metrics as M
from freeal_ray.model_card import write_model_card
from freeal_ray.pipeline import RunContext, Stage

# The stages' working columns, which the output leaves out.
WORKING_COLUMNS = ("demo_ids", "prompt_tokens", "output_tokens", "prompt_trimmed", "prev_label", "prev_tags", "prev_confidence", "kept_previous")


class Finalize(Stage):
    """`r` is the last round that finished (0: the LLM's round-0 labels, no SLM)."""

    name = "finalize"
    inputs = ("round-{r}/labels",)
    outputs = ("labels", "slm")

    def run(self, ctx: RunContext, info: dict) -> None:
        last, labels_out, slm_out = self.r, ctx.path("labels"), ctx.path("slm")
        shutil.rmtree(labels_out, ignore_errors=True)
        final = ctx.table(f"round-{last}", "labels").map_batches(ctx.kind.fill, batch_format="pandas")
        drop = [c for c in WORKING_COLUMNS if c in final.columns()]
        tables.write_table(final.drop_columns(drop).map_batches(tables.conform, batch_format="pandas"), labels_out)
        if ctx.incremental and last:
            info.update(_label_the_rest(ctx, last, labels_out / "slm"))
        info.update(_label_the_duplicates(ctx, labels_out / "duplicates"))
        if last:
            shutil.rmtree(slm_out, ignore_errors=True)
            shutil.copytree(ctx.path(f"round-{last}", "slm"), slm_out)
            write_model_card(slm_out, ctx.manifest.data)
        info.update(rounds=last)


def _label_the_duplicates(ctx: RunContext, out) -> dict:
    """Rows that repeat a labelled row's text get its label."""
    if not tables.count_rows(ctx.path("duplicates")):
        return {}
    copies = tables.copied_rows(ctx.table("labels"), ctx.path("duplicates"), "canonical_id")  # read before `out` is written
    tables.write_table(copies.rename_columns({"canonical_id": "duplicate_of"}).map_batches(tables.conform, batch_format="pandas"), out)
    return {"duplicates_labelled": tables.count_rows(out)}


def _label_the_rest(ctx: RunContext, last: int, out) -> dict:
    """Incremental mode: the last SLM labels every row the LLM never saw (source 'slm')."""
    rest = ctx.scored(ctx.unannotated(last), last)
    labelled = rest.map_batches(ctx.kind.student_labels, fn_kwargs={"round_": last}, batch_format="pandas")
    tables.write_table(labelled.map_batches(tables.conform, batch_format="pandas"), out)
    n = tables.count_rows(out)
    metrics = {"slm_labelled_rows": n}
    if ctx.has_gold():
        metrics["final_acc"] = M.label_quality(tables.LocalTable(ctx.path("labels")), "label", ctx.task.labels)["acc"]
    ctx.manifest.round_metrics(last, **metrics)
    return {"slm_labelled": n}


