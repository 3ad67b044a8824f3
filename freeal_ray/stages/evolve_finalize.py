"""evolve-finalize: EvoKD's output. `slm/` is the last round's student; `evolve/examples` every
example it trained on (text, label, origin, easy or hard, round); with a corpus, `labels/` holds
the student's label for every row (source 'slm')."""

from __future__ import annotations

import shutil

import pandas as pd

from freeal_ray import tables
from freeal_ray.model_card import write_model_card
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_train import batch_folder, student_folder


class EvolveFinalize(Stage):
    """`r` is the last EvoKD round that finished."""

    name = "evolve-finalize"
    outputs = ("evolve/examples", "slm", "labels")

    def __init__(self, r: int, label_corpus: bool = True):
        super().__init__(r)
        self.label_corpus = label_corpus
        self.inputs = (batch_folder(r),)

    def run(self, ctx: RunContext, info: dict) -> None:
        examples = pd.concat([tables.read_frame(ctx.path(batch_folder(k))) for k in range(self.r + 1)], ignore_index=True)
        shutil.rmtree(ctx.path("evolve", "examples"), ignore_errors=True)
        tables.write_part(examples, ctx.path("evolve", "examples"), "examples")
        shutil.rmtree(ctx.path("slm"), ignore_errors=True)
        shutil.copytree(ctx.path(student_folder(self.r)), ctx.path("slm"))
        write_model_card(ctx.path("slm"), ctx.manifest.data)
        info.update(rounds=self.r, examples=len(examples), generated=int((examples["origin"] == "evokd").sum()))
        if self.label_corpus and ctx.has_corpus():
            shutil.rmtree(ctx.path("labels"), ignore_errors=True)
            scored = ctx.scored(ctx.table("corpus"), self.r, folder="slm")
            labelled = scored.map_batches(ctx.kind.student_labels, fn_kwargs={"round_": self.r}, batch_format="pandas")
            tables.write_table(labelled.map_batches(tables.conform, batch_format="pandas"), ctx.path("labels"))
            info.update(labelled=tables.count_rows(ctx.path("labels")))
