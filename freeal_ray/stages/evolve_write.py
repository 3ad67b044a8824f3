"""evolve-write-r: the LLM writes round r's batch from its analysis (with the rows it quotes cut
out, or a small LLM writes them back as its "hard" examples): hard examples for the classes
the student gets wrong (in proportion to its mistakes there), easy ones for every class, each
prompt showing a few texts of the kind to write. It only writes: labelling is the next stage's
separate call."""

from __future__ import annotations

import random

import pandas as pd

from freeal_ray import tables
from freeal_ray.evokd import render, without_quotes, writing_messages, writing_plan
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.prompts import clean_synthetic
from freeal_ray.stages.evolve_probe import probe_folder
from freeal_ray.writing import chat_template, write

STYLE_TEXTS = 3


def written_folder(r: int) -> str:
    return f"evolve/round-{r}/written"


class EvolveWrite(Stage):
    name = "evolve-write-{r}"
    inputs = ("evolve/round-{prev}/probe",)
    outputs = ("evolve/round-{r}/written",)

    def run(self, ctx: RunContext, info: dict) -> None:
        loop, task, r = ctx.cfg.loop, ctx.task, self.r
        seen = ctx.manifest.stage(f"evolve-analyse-{r}")
        plan = writing_plan(task, seen.get("wrong_labels", []), seen.get("wrong_preds", []), seen.get("class_f1", {}),
                            loop.evolve_batch, loop.evolve_hard_share, loop.seed + r)
        probe = tables.read_frame(ctx.path(probe_folder(r - 1)))
        texts = probe["text"].tolist()
        shown = probe.loc[probe["id"].isin([*seen.get("shown_wrong", []), *seen.get("shown_right", [])]), "text"]
        analysis = without_quotes(seen.get("analysis", ""), shown)
        rng, llm = random.Random(loop.seed + r), ctx.llm()
        chat = chat_template(llm)
        prompts = [render(writing_messages(task, analysis, label, hard, rng.sample(texts, min(STYLE_TEXTS, len(texts)))),
                          chat, lead=f"{task.input_name}:") for label, hard in plan]
        out = write(prompts, llm, ctx.cfg.llm.synth_max_tokens, ctx.cfg.llm.synth_temperature, stop=("\n",),
                    desc=f"EvoKD writing, round {r}")
        written = pd.DataFrame({
            "id": [f"evokd-{r}-{i}" for i in range(len(plan))], "text": [_strip(t, task.input_name) for t in out.texts],
            "intended": [label for label, _ in plan], "hard": [hard for _, hard in plan],
            "prompt_tokens": out.prompt_tokens, "output_tokens": out.output_tokens,
        })
        tables.write_part(written, ctx.path(written_folder(r)), "written")
        info.update(written=len(written), hard=int(written["hard"].sum()), llm_calls=len(prompts),
                    prompt_tokens=int(pd.Series(out.prompt_tokens).fillna(0).sum()),
                    output_tokens=int(pd.Series(out.output_tokens).fillna(0).sum()))


def _strip(text: str, input_name: str) -> str:
    """The text alone: chat models often lead with the field's name or wrap the text in quotes."""
    text = clean_synthetic(text)
    for lead in (f"{input_name}:", "Text:"):
        if text.lower().startswith(lead.lower()):
            text = text[len(lead):].strip()
    return text.strip().strip('"“”').strip()
