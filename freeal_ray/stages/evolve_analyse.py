"""evolve-analyse-r: the LLM is shown the student's wrong answers (its surest mistakes first; for NER
the sentences with the most entity errors) and as many right ones from the last probe, with its F1
per class or entity type, and says in words what the student is weak at. The analysis, and which
rows it was shown, go to the manifest and the report. A student with no mistake to show gets no
analysis, and its round no hard examples."""

from __future__ import annotations

from freeal_ray import tables
from freeal_ray.evokd import render
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_probe import probe_folder
from freeal_ray.writing import chat_template, write

ANALYSIS_TOKENS = 160


class EvolveAnalyse(Stage):
    name = "evolve-analyse-{r}"
    inputs = ("evolve/round-{prev}/probe",)

    def run(self, ctx: RunContext, info: dict) -> None:
        if ctx.cfg.loop.evolve_hard_share == 0:  # every example is an easy one: no analysis is read
            info.update(analysis="", skipped="loop.evolve_hard_share is 0", llm_calls=0)
            return
        probe = tables.read_frame(ctx.path(probe_folder(self.r - 1)))
        f1 = ctx.kind.evolve_f1(probe[ctx.kind.label_column], probe["pred"])
        messages, shown, mistakes = ctx.kind.evolve_analysis(probe, f1, ctx.cfg.loop.evolve_shown, ctx.cfg.loop.seed + self.r)
        is_wrong = shown["wrong"].astype(bool)
        w, g = shown[is_wrong], shown[~is_wrong]
        if w.empty:
            # Nothing to study, so nothing is asked: shown only right answers, the LLM invents a
            # weakness (TREC at 1.5B, round 1, right on its six seeds: "weak at abbreviation against
            # description"), and the hard examples aimed at it cost tokens and are relabelled more.
            # The round's batch is all easy ones (evolve-write), and its probe finds real mistakes.
            info.update(analysis="", skipped="the student made no mistake on its last probe", shown_wrong=[],
                        shown_right=g["id"].tolist(), **mistakes, class_f1=f1, llm_calls=0)
            ctx.manifest.evolve_metrics(self.r, analysis="", shown_wrong=0, shown_right=len(g))
            return
        llm = ctx.llm()
        answer = write([render(messages, chat_template(llm), lead="Analysis:")], llm, ANALYSIS_TOKENS, 0.0, stop=(),
                       desc=f"EvoKD analysis, round {self.r}")
        analysis = answer.texts[0]
        info.update(analysis=analysis, shown_wrong=w["id"].tolist(), shown_right=g["id"].tolist(), **mistakes,
                    class_f1=f1, llm_calls=1, prompt_tokens=answer.prompt_tokens[0], output_tokens=answer.output_tokens[0])
        ctx.manifest.evolve_metrics(self.r, analysis=analysis, shown_wrong=len(w), shown_right=len(g))
