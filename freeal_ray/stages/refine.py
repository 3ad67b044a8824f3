"""refine-r: the LLM re-labels the rows the split calls noisy (`loop.refine_rows`), in-context with
round r's demos, embedded by round r's SLM encoder; the clean rows keep their labels. Round r's
labels are `clean` (kept as they were) plus `refined` (the new answers, accepted under
`loop.refine_accept`); the raw answers stay in `answers`."""

from __future__ import annotations

import shutil
from pathlib import Path

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.pipeline import RunContext, Stage

# Which scored rows the refinery re-asks (loop.refine_rows); every other row keeps its label.
REASK = {
    "noisy": lambda row: not bool(row["clean"]),  # abstentions have no loss, so they are never clean
    "abstentions": lambda row: row["label"] is None,
    "none": lambda row: False,
}


class Refine(Stage):
    name = "refine-{r}"
    inputs = ("round-{r}/scores", "round-{r}/demos")
    outputs = ("round-{r}/labels/clean", "round-{r}/answers", "round-{r}/labels/refined")

    def run(self, ctx: RunContext, info: dict) -> None:
        r, kind = self.r, ctx.kind
        labels_dir = ctx.path(f"round-{r}", "labels")
        scores = ctx.table(f"round-{r}", "scores")
        shutil.rmtree(labels_dir / "clean", ignore_errors=True)
        reask = REASK[ctx.cfg.loop.refine_rows]
        kept = scores.filter(lambda row: not reask(row))
        tables.write_table(kept.map_batches(kind.carry, batch_format="pandas").map_batches(tables.conform, batch_format="pandas"),
                        labels_dir / "clean")
        noisy = scores.filter(reask).map_batches(kind.carry, batch_format="pandas")
        n_noisy = tables.count_where(ctx.path(f"round-{r}", "scores"), reask, ["clean", "label"])
        answers_dir = ctx.path(f"round-{r}", "answers")
        if n_noisy:
            annotate(noisy, ctx.demos(r), ctx.task, ctx.llm(), ctx.encoder_path(r), ctx.shots, r, str(answers_dir), total=n_noisy)
        kept_previous = _accept_answers(ctx, answers_dir, labels_dir / "refined")
        usage = ctx.llm_usage(answers_dir)
        ctx.notice_abstentions(labels_dir / "refined", f"of the {n_noisy} rows re-asked in round {r}")
        table = tables.LocalTable(labels_dir)
        changed = tables.count_where(labels_dir, kind.changed, list(kind.predicate_columns))
        n = tables.count_rows(labels_dir)
        info.update(noisy=n_noisy, changed=changed, **usage)
        metrics = {"noisy_rows": n_noisy, "changed": changed, "changed_fraction": changed / max(n, 1),
                   "kept_previous": kept_previous, **usage, **ctx.label_metrics(table)}
        if ctx.has_gold():
            metrics.update(kind.final_metrics(tables.LocalTable(labels_dir, transform=kind.fill)))
        ctx.manifest.round_metrics(r, **metrics)


def _accept_answers(ctx: RunContext, answers_dir: Path, refined_dir: Path) -> int:
    """The refinery's labels from its answers (`loop.refine_accept`); how many kept the earlier label."""
    shutil.rmtree(refined_dir, ignore_errors=True)
    answers = tables.read_table(answers_dir)
    if answers is None:
        return 0
    accepted = answers.map_batches(ctx.kind.accept, fn_kwargs={"rule": ctx.cfg.loop.refine_accept}, batch_format="pandas")
    tables.write_table(accepted.map_batches(tables.conform, batch_format="pandas"), refined_dir)
    return tables.count_where(refined_dir, lambda row: bool(row["kept_previous"]), ["kept_previous"])
