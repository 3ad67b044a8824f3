"""ingest: the user's corpus read, checked and normalised into the run's `corpus` table; bad rows
go to `quarantine` with their reason, repeated texts to `duplicates`."""

from __future__ import annotations

import shutil

from freeal_ray import corpus, duplicates
from freeal_ray import tables
from freeal_ray.errors import CorpusError
from freeal_ray.pipeline import RunContext, Stage


class Ingest(Stage):
    name = "ingest"
    outputs = ("corpus", "quarantine", "duplicates")

    def run(self, ctx: RunContext, info: dict) -> None:
        c = ctx.cfg.corpus
        raw, bad_lines = corpus.read_raw(c)
        if c.limit:
            raw = raw.limit(c.limit)
        renames = corpus.passthrough_renames(corpus.check_columns(c, raw), c)
        if renames:
            shown = ", ".join(f"{a} as {b}" for a, b in renames.items())
            print(f"[freeal_ray] corpus columns named like the output's are kept under new names: {shown}", flush=True)
        opts = {
            "text_column": c.text_column, "id_column": c.id_column, "gold_column": c.gold_column,
            "view_column": c.view_column, "llm_label_column": c.llm_label_column,
            "entities": ctx.kind.sentences, "renames": renames,
        }
        rows = raw.map_batches(corpus.normalise_rows, fn_kwargs={"cfg": opts}, batch_format="pandas")
        for folder in self.output_folders():
            shutil.rmtree(ctx.path(folder), ignore_errors=True)
        rows = rows.materialize()
        bad = rows.filter(lambda r: r["__error"] is not None)
        good = _unique_ids(rows.filter(lambda r: r["__error"] is None).drop_columns(["__error"]), c)
        good, repeats = duplicates.split_duplicate_texts(good)
        if repeats is not None:
            tables.write_table(repeats, ctx.path("duplicates"))
        quarantined = bad.map_batches(corpus.quarantine_rows, batch_format="pandas")
        if bad_lines is not None:
            quarantined = quarantined.union(bad_lines.map_batches(lambda b: b.to_pandas(), batch_format="pyarrow"))
        tables.write_table(good.map_batches(tables.conform, batch_format="pandas"), ctx.path("corpus"))
        tables.write_table(quarantined, ctx.path("quarantine"))
        info.update(_say_what_was_set_aside(ctx), renamed_columns=renames)
        if c.gold_column:
            ctx.kind.check_gold(ctx.path("corpus"), c.gold_column)
        info.update(texts_cut=_notice_long_texts(ctx))


def _unique_ids(good, c):
    """Derived ids: repeats dropped (same text, same id). Given ids: repeats are an error."""
    if c.id_column is None:
        return duplicates.drop_duplicate_ids(good)
    dupes = duplicates.find_duplicate_ids(good)
    if dupes:
        shown = ", ".join(f"{i!r} ({n} rows)" for i, n in dupes)
        raise CorpusError(
            f"corpus {c.path} has duplicate ids in column {c.id_column!r}: {shown}. Ids must be "
            "unique; fix them, or set corpus.id_column: null to derive ids from the text"
        )
    return good


def _say_what_was_set_aside(ctx: RunContext) -> dict:
    n_rows, n_bad = tables.count_rows(ctx.path("corpus")), tables.count_rows(ctx.path("quarantine"))
    if n_rows == 0:
        raise CorpusError(f"corpus {ctx.cfg.corpus.path} has no usable rows ({n_bad} quarantined: see {ctx.path('quarantine')})")
    if n_bad:
        print(f"[freeal_ray] {n_bad} rows quarantined with their reasons in {ctx.path('quarantine')}")
    n_dupes = tables.count_rows(ctx.path("duplicates"))
    if n_dupes:
        print(f"[freeal_ray] {n_dupes} rows repeat another row's text: each text is labelled once, "
              "and the output copies its label to the repeats (column duplicate_of)")
    return {"rows": n_rows, "quarantined": n_bad, "duplicate_texts": n_dupes}


def _notice_long_texts(ctx: RunContext) -> int:
    """Texts longer than llm.max_text_chars reach the LLM cut: say so once, at ingest."""
    cap = ctx.cfg.llm.max_text_chars
    n = ctx.kind.long_texts(ctx.path("corpus"), cap)
    if n:
        print(f"[freeal_ray] {n} texts are longer than llm.max_text_chars ({cap}): the LLM sees their first "
              f"{cap} characters (the SLM its first slm.max_length tokens)", flush=True)
    return n
