"""evolve-write-r: the LLM writes round r's batch from its analysis (with the rows it quotes cut
out, or a small LLM writes them back as its "hard" examples): hard examples for the groups the
student gets wrong (classes, or entity types for NER; in proportion to its mistakes there), easy
ones for every group, each prompt showing a few texts of the kind to write. It only writes:
labelling is the next stage's separate call."""

from __future__ import annotations

import random

import pandas as pd

from freeal_ray import tables
from freeal_ray.evokd import without_quotes, writing_plan
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_probe import probe_folder

STYLE_TEXTS = 3


def written_folder(r: int) -> str:
    return f"evolve/round-{r}/written"


class EvolveWrite(Stage):
    name = "evolve-write-{r}"
    inputs = ("evolve/round-{prev}/probe",)
    outputs = ("evolve/round-{r}/written",)

    def run(self, ctx: RunContext, info: dict) -> None:
        loop, r = ctx.cfg.loop, self.r
        seen = ctx.manifest.stage(f"evolve-analyse-{r}")
        plan = writing_plan(ctx.kind.evolve_groups(), seen.get("wrong_labels", []), seen.get("wrong_preds", []),
                            seen.get("class_f1", {}), loop.evolve_batch, loop.evolve_hard_share, loop.seed + r)
        probe = tables.read_frame(ctx.path(probe_folder(r - 1)))
        texts = probe["text"].tolist()
        shown = probe.loc[probe["id"].isin([*seen.get("shown_wrong", []), *seen.get("shown_right", [])]), "text"]
        rng = random.Random(loop.seed + r)
        style = [rng.sample(texts, min(STYLE_TEXTS, len(texts))) for _ in plan]
        written, prompt_tokens, output_tokens = ctx.kind.evolve_write(
            plan, without_quotes(seen.get("analysis", ""), shown), style, ctx.llm(), ctx.cfg.llm, f"EvoKD writing, round {r}")
        written.insert(0, "id", [f"evokd-{r}-{i}" for i in range(len(plan))])
        written["hard"] = [hard for _, hard in plan]
        written["prompt_tokens"], written["output_tokens"] = prompt_tokens, output_tokens
        tables.write_part(written, ctx.path(written_folder(r)), "written")
        info.update(written=len(written), hard=int(written["hard"].sum()), llm_calls=len(plan),
                    prompt_tokens=int(pd.Series(prompt_tokens, dtype=float).fillna(0).sum()),
                    output_tokens=int(pd.Series(output_tokens, dtype=float).fillna(0).sum()))
