"""EvoKD: what the LLM is shown, what is kept of what it writes, the review history, resume."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_overrides
from freeal_ray import tables
from freeal_ray.config import load_config
from freeal_ray.evokd import (STYLE_LEAD, WEAK_LEAD, class_f1, confused_with, copied, keep_written, rewrite_copies,
                              shown_samples, text_key, without_quotes, writing_messages, writing_plan)
from freeal_ray.kinds import kind_for
from freeal_ray.task import EntityTask, Task

TASK = Task(name="toy", labels=("negative", "positive"), instruction="Classify the review's sentiment.",
            examples=(("the film was awful and dull", "negative"), ("the plot was lovely and superb", "positive")))


def test_the_student_s_planted_mistakes_are_what_the_llm_is_shown():
    rng = np.random.default_rng(0)
    labels = np.array(rng.choice(["negative", "positive"], size=60), dtype=object)
    preds = labels.copy()
    planted = np.array([3, 17, 29, 41, 55])
    preds[planted] = np.where(labels[planted] == "negative", "positive", "negative")
    confidence = rng.uniform(0.5, 1.0, size=60)
    labels[[7, 8]] = None  # no reference label: never shown, right or wrong

    wrong, right = shown_samples(labels, preds, confidence, k=4, seed=0)

    assert set(wrong) < set(planted) and len(wrong) == 4
    assert list(wrong) == sorted(planted, key=lambda i: -confidence[i])[:4]  # its surest mistakes first
    assert len(right) == 4 and all(labels[i] == preds[i] for i in right) and not {7, 8} & set(right)
    all_wrong, _ = shown_samples(labels, preds, confidence, k=10, seed=0)
    assert sorted(all_wrong) == sorted(planted)


def test_hard_examples_go_where_the_student_errs_and_easy_ones_where_it_has_fewest():
    task = Task(name="t", labels=("a", "b", "c"), instruction="Sort.")
    plan = writing_plan(task.labels, ["c"] * 6, ["a"] * 6, {"a": 0.9, "b": 1.0, "c": 0.2}, batch=20, hard_share=0.5, seed=0)
    hard = [label for label, h in plan if h]
    easy = [label for label, h in plan if not h]
    assert len(hard) == 10 and set(hard) <= {"a", "c"} and hard.count("c") > hard.count("a")
    assert easy.count("b") > easy.count("c") and "b" in easy  # the class no hard example went to is filled first
    tried = {"a": 9, "b": 1, "c": 2}  # examples written so far: b and c nearly never
    plan = writing_plan(task.labels, ["a"] * 4, [], {}, batch=12, hard_share=0.25, seed=1, tried=tried)
    total = {c: tried[c] + [g for g, _ in plan].count(c) for c in task.labels}
    assert [g for g, h in plan if h] == ["a"] * 3 and "a" not in [g for g, h in plan if not h]
    assert total == {"a": 12, "b": 6, "c": 6}
    # a confusion the labelling call keeps rejecting (b kept 1 in 10) gets few hard examples
    shy = writing_plan(task.labels, ["b", "c"] * 10, [], {}, batch=40, hard_share=1.0, seed=0, kept_share={"b": 0.1, "c": 0.9})
    assert [g for g, _ in shy].count("c") > 3 * [g for g, _ in shy].count("b")
    no_mistakes = writing_plan(task.labels, [], [], {"a": 1.0, "b": 1.0, "c": 0.1}, batch=30, hard_share=1.0, seed=0)
    assert [label for label, _ in no_mistakes].count("c") > 20  # then its weakest class by F1
    assert class_f1(["a", "a", "b", None], ["a", "b", "b", "a"], ["a", "b"]) == {"a": 2 / 3, "b": 2 / 3}


def test_a_hard_prompt_names_a_mistake_of_the_student_s_between_its_class_and_another():
    labels = ("world", "sports", "business", "tech")
    task = Task(name="news", labels=labels, instruction="Sort the article by topic.", input_name="Article")
    confusions = [["business", "tech"], ["business", "tech"], ["world", "business"], ["sports", "sports"]]
    plan = [("business", True)] * 30 + [("world", True), ("sports", True), ("tech", False), ("business", False)]
    drawn = confused_with(plan, confusions, seed=0)
    assert set(drawn[:30]) == {("business", "tech"), ("world", "business")}
    assert drawn[:30].count(("business", "tech")) > drawn[:30].count(("world", "business"))
    assert drawn[30:] == [("world", "business"), None, None, None]  # a right answer is no mistake; easy ones get none

    style = ["Stocks fell on Monday.", "A new chip was shown."]
    analysis = "It mistakes company news about chips for tech."
    taken_for = writing_messages(task, analysis, "business", True, style, ("business", "tech"))[1]["content"]
    assert taken_for.endswith("Write one new article whose label is clearly business, though it has something of tech "
                              "about it. Write only the text, on one line.")
    taken_as = writing_messages(task, analysis, "business", True, style, ("world", "business"))[1]["content"]
    assert "clearly business, though it has something of world about it. Write" in taken_as
    assert "classifier" not in taken_for.split(STYLE_LEAD)[1]  # the ask says nothing the writer could echo as its text
    # the analysis first, then the real texts: the writer reads texts between the talk and its answer
    assert taken_for.index(WEAK_LEAD) < taken_for.index(STYLE_LEAD) < taken_for.index("Stocks fell") < taken_for.index("Write one new article")
    easy = writing_messages(task, analysis, "business", False, style, ("business", "tech"))
    assert easy == writing_messages(task, analysis, "business", False, style)  # an easy prompt ignores any mistake
    assert easy[1]["content"] == (f"{STYLE_LEAD}\nArticle: Stocks fell on Monday.\nArticle: A new chip was shown.\n\n"
                                  "Write one new, typical article whose label is clearly business. Write only the text, on one line.")


def test_a_written_example_the_labelling_call_disagrees_with_is_dropped():
    seen = {text_key("the acting was superb and lovely, a delight")}
    texts = ["A gripping, superb thriller.", "a dull mess", "The acting was superb and lovely, a delight!",
             "A gripping, superb thriller", "", "flat and lifeless"]
    intended = ["positive", "negative", "positive", "positive", "negative", "negative"]
    answered = ["positive", "positive", "positive", "positive", None, None]
    kind = kind_for(TASK)
    agrees = [kind.evolve_agrees(w, a, w) for w, a in zip(intended, answered)]

    keep, counts = keep_written(texts, agrees, copied(texts, seen))

    assert list(keep) == [True, False, False, False, False, False]
    assert counts == {"written": 6, "empty": 1, "copied": 1, "repeated": 1, "relabelled": 2, "kept": 1}


def test_the_hard_prompts_get_the_analysis_without_the_rows_it_quotes():
    shown = ["What is the capital of France ?", "How many people live in Tokyo ?"]
    analysis = ('It confuses places with numbers: "What is the capital of France?" was called a number, and '
                "how many people live in Tokyo was called a place. Short questions trip it.")
    cut = without_quotes(analysis, shown)
    assert cut == ("It confuses places with numbers: … was called a number, and … was called a place. "
                   "Short questions trip it.")
    assert not any(text_key(s) in text_key(cut) for s in shown)
    assert without_quotes("Questions about the capital trip it.", shown) == "Questions about the capital trip it."


def test_a_written_example_that_repeats_any_corpus_row_is_found(tmp_path):
    from freeal_ray.stages.evolve_write import corpus_copies

    corpus = tmp_path / "corpus"
    for part in range(3):  # rows the LLM was never shown, in several parts
        tables.write_part(pd.DataFrame({"id": [f"{part}-{i}" for i in range(50)],
                                        "text": [f"review {part} {i} : it was fine ." for i in range(50)]}), corpus, "corpus")
    written = ["Review 2 41: it was fine.", "review 2 41 : it was not fine .", "a new review", ""]
    assert corpus_copies(corpus, written) == {text_key(written[0])}
    keep, counts = keep_written(written, [True] * 4, copied(written, corpus_copies(corpus, written)))
    assert list(keep) == [False, True, True, False] and counts["copied"] == 1


def test_a_written_copy_is_written_again_once_and_both_calls_are_paid_for():
    seen = {text_key("What is the capital of France ?"), text_key("a seed review that was shown to the writer")}
    written = pd.DataFrame({"text": ["What is the capital of France?", "Who wrote Hamlet?",
                                     "A seed review that was shown to the writer, again"],
                            "tokens": [["What"], ["Who"], ["A"]]})  # list cells, as NER's
    asked = []

    def write_again(at):
        asked.append(at)
        return pd.DataFrame({"text": ["How tall is Everest?", "a fresh review"], "tokens": [["How"], ["a"]]}), [7, 8], [3, 4]

    out, prompt, output, n = rewrite_copies(written, [10, 11, 12], [5, 6, 7], seen, write_again)
    assert asked == [[0, 2]] and n == 2  # the whole copy and the one that holds a seen text, once each
    assert out["text"].tolist() == ["How tall is Everest?", "Who wrote Hamlet?", "a fresh review"]
    assert out["tokens"].tolist() == [["How"], ["Who"], ["a"]]
    assert prompt == [17, 11, 20] and output == [8, 6, 11]
    _, _, _, none = rewrite_copies(out, prompt, output, seen, write_again)
    assert none == 0 and len(asked) == 1  # nothing left to rewrite: no call


def test_a_written_text_that_echoes_its_prompt_s_analysis_is_a_copy():
    lead = "What the classifier is weak at: It confuses abbreviations with descriptions of terms."
    texts = ["What the classifier is weak at: It confuses abbreviations with", "it confuses abbreviations with descriptions of terms",
             "What is the classifier called in Latin?", "What does the abbreviation NASA stand for?"]
    assert copied(texts, set(), prompt=lead).tolist() == [True, True, False, False]
    assert not copied(texts, set()).any()  # no prompt: nothing echoed


def test_a_student_with_no_mistake_to_show_gets_no_analysis_and_an_all_easy_batch(tmp_path, monkeypatch):
    """A 1-shot student is right on its seeds, its first probe: shown only right answers, an LLM
    invents a weakness, and hard examples aimed at it are paid for and relabelled more."""
    from freeal_ray.pipeline import RunContext
    from freeal_ray.stages.evolve_analyse import EvolveAnalyse
    from freeal_ray.stages.evolve_probe import probe_folder
    from freeal_ray.stages.evolve_train import batch_folder
    from freeal_ray.stages.evolve_write import earlier_writing, round_plan, written_folder

    ctx = RunContext(load_config(None, {"task": "sentiment", "output": str(tmp_path / "run"), "loop.mode": "evokd",
                                        "loop.evolve_batch": 6}))
    seeds = pd.DataFrame({"id": ["s0", "s1"], "text": ["dull and awful", "lovely, superb"], "label": ["negative", "positive"]})
    tables.write_part(seeds, ctx.path(batch_folder(0)), "batch")
    tables.write_part(seeds.assign(pred=seeds["label"], pred_confidence=0.9), ctx.path(probe_folder(0)), "probe")
    monkeypatch.setattr(RunContext, "llm", lambda self: pytest.fail("the LLM was asked for an analysis"))

    ctx.run_stage(EvolveAnalyse(1))
    analysed = ctx.manifest.stage("evolve-analyse-1")
    assert analysed["llm_calls"] == 0 and analysed["analysis"] == "" and analysed["shown_wrong"] == []
    plan = round_plan(ctx, 1)
    assert len(plan) == 6 and not any(hard for _, hard in plan)
    assert sorted(g for g, _ in plan) == ["negative"] * 3 + ["positive"] * 3  # easy ones go where the fewest are

    # with a mistake to study, the analysis is written and half the batch aims at it
    ctx.manifest.data["stages"]["evolve-analyse-1"].update(analysis="It misses irony.", wrong_labels=["negative"],
                                                           wrong_preds=["positive"])
    assert sum(hard for _, hard in round_plan(ctx, 1)) == 3

    # round 2's easy ones balance what round 1 wrote, kept or not: round 1 wrote 4 negative ones
    # (the labelling call kept 1) and 2 positive ones (kept both)
    written = pd.DataFrame({"id": [f"evokd-1-{i}" for i in range(6)], "text": list("abcdef"), "intended": ["negative"] * 4 + ["positive"] * 2,
                            "group": ["negative"] * 4 + ["positive"] * 2, "hard": False, "copied": False})
    tables.write_part(written, ctx.path(written_folder(1)), "written")
    tables.write_part(written[["id"]].assign(label=["negative", "positive", "positive", "positive", "positive", "positive"]),
                      ctx.path("evolve/round-1/answers"), "answers")
    tables.write_part(written.iloc[[0, 4, 5]][["id", "text"]].assign(label=["negative", "positive", "positive"]),
                      ctx.path(batch_folder(1)), "batch")
    tried, kept_share = earlier_writing(ctx, 2)
    assert tried == {"negative": 5, "positive": 3} and kept_share == {"negative": 2 / 6, "positive": 3 / 4}
    ctx.manifest.data["stages"]["evolve-analyse-2"] = {"analysis": "", "class_f1": {}}
    assert sorted(g for g, _ in round_plan(ctx, 2)) == ["negative"] * 2 + ["positive"] * 4


def test_ner_the_tagger_s_planted_entity_mistakes_are_what_the_llm_is_shown_and_aimed_at():
    from freeal_ray.evokd_entities import mistake_pairs, shown_sentences, type_f1

    gold = [["B-PER", "I-PER", "O", "B-LOC"]] * 8 + [None]
    pred = [list(g) for g in gold[:8]] + [["O", "O", "O", "O"]]
    pred[2] = ["B-PER", "I-PER", "O", "O"]  # missed a LOC
    pred[5] = ["B-LOC", "I-LOC", "O", "B-PER"]  # both entities typed wrong: four errors
    pred[6] = ["O", "O", "O", "B-LOC"]  # missed a PER
    wrong, right = shown_sentences(gold, pred, k=2, seed=0)
    assert list(wrong) == [5, 2]  # the most entity errors first, the no-reference sentence never
    assert len(right) == 2 and not {2, 5, 6, 8} & set(right)
    assert sorted(shown_sentences(gold, pred, k=9, seed=0)[0]) == [2, 5, 6]
    assert type_f1(gold, pred, ["PER", "LOC"]) == {"PER": 2 * 6 / (8 + 7), "LOC": 2 * 6 / (8 + 7)}
    pairs = mistake_pairs([gold[i] for i in (2, 5, 6)], [pred[i] for i in (2, 5, 6)])
    assert pairs == [("LOC", "O"), ("PER", "LOC"), ("LOC", "PER"), ("PER", "O")]  # (the sentence's type, the tagger's)
    # a name tagged in part pairs with what the tagger said there; a made-up one has no reference type
    assert mistake_pairs([["B-PER", "I-PER", "O", "B-ORG", "I-ORG"], ["B-LOC"]],
                         [["B-PER", "O", "B-LOC", "O", "B-LOC"], ["O"]]) == [("PER", "PER"), ("ORG", "LOC"), ("O", "LOC"), ("LOC", "O")]
    missed, said = [a for a, _ in pairs if a != "O"], [b for _, b in pairs if b != "O"]
    plan = writing_plan(("PER", "LOC", "MISC"), missed, said, {}, batch=20, hard_share=1.0, seed=0)
    assert {g for g, _ in plan} <= {"PER", "LOC"}  # no hard sentence aimed at a type it never gets wrong


def test_ner_a_hard_prompt_names_a_mistake_of_the_tagger_s_involving_its_type(monkeypatch):
    from freeal_ray.evokd_entities import ANSWER_FORM, WEAK_LEAD as NER_WEAK_LEAD, writing_prompt

    task = EntityTask(name="t", types={"PER": "people", "LOC": "places", "ORG": "organisations"}, instruction="Find them.")
    confusions = [["LOC", "ORG"], ["PER", "O"], ["O", "LOC"], ["ORG", "LOC"], ["LOC", "LOC"]]  # the last: a name's edges
    drawn = confused_with([("LOC", True)] * 40 + [("PER", True), ("PER", False)], confusions, seed=0)
    assert set(drawn[:40]) == {("LOC", "ORG"), ("O", "LOC"), ("ORG", "LOC")} and drawn[40:] == [("PER", "O"), None]

    style, analysis = ["Ann flew to Oslo ."], "It takes towns named after firms for firms."
    asks = {pair: writing_prompt(task, analysis, "LOC", True, style, pair) for pair in [("LOC", "ORG"), ("ORG", "LOC"), ("O", "LOC")]}
    assert "one new sentence that names at least one LOC (places) that could pass for ORG, and list all its entities." in asks["LOC", "ORG"]
    assert "at least one LOC (places), and one ORG name that could pass for LOC, and list" in asks["ORG", "LOC"]
    assert "at least one LOC (places), and a word that is no name but could pass for LOC, and list" in asks["O", "LOC"]
    missed = writing_prompt(task, analysis, "PER", True, style, ("PER", "O"))
    assert "at least one PER (people) that is easy to miss, and list all its entities." in missed
    assert writing_prompt(task, analysis, "LOC", True, style, ("LOC", "LOC")).endswith(  # no mistake named: the general ask
        "at least one LOC (places) of the kind the tagger gets wrong, and list all its entities." + ANSWER_FORM)
    # the analysis first, then the real sentences, then the ask
    assert missed.index(NER_WEAK_LEAD) < missed.index(analysis) < missed.index("Ann flew") < missed.index("Write one new sentence")
    easy = writing_prompt(task, analysis, "PER", False, style, ("PER", "O"))
    assert easy == writing_prompt(task, analysis, "PER", False, style) and analysis not in easy  # static synthesis writes with it
    assert easy.endswith("Sentences of the kind to write (do not repeat them; write a new one):\nSentence: Ann flew to Oslo .\n\n"
                         "Write one new, typical sentence that names at least one PER (people), and list all its entities. "
                         'Answer in JSON as {"sentence": ..., "entities": [{"text": ..., "type": ...}]}.\nAnswer:')

    # the kind writes each sentence with its own pair
    import freeal_ray.writing

    asked = []
    unread = SimpleNamespace(text="", prompt_tokens=1, output_tokens=1)
    monkeypatch.setattr(freeal_ray.writing, "extract", lambda prompts, *a, **k: asked.extend(prompts) or [unread] * len(prompts))
    kind_for(task).evolve_write([("LOC", True), ("PER", False)], analysis, [style, style], None,
                                SimpleNamespace(synth_max_tokens=64, synth_temperature=0.7), "", confusion=[("ORG", "LOC"), None])
    assert asked == [asks["ORG", "LOC"], easy]


def test_ner_a_written_sentence_the_labelling_call_reads_otherwise_is_dropped():
    kind = kind_for(EntityTask(name="t", types={"PER": "people", "LOC": "places"}, instruction="Find them."))
    tags = {"e0": ["B-PER", "O", "O", "B-LOC"], "e1": ["B-PER", "O", "B-PER"], "e2": ["B-LOC", "O", "O"],
            "e3": ["B-PER", "O", "O", "B-LOC"], "e4": ["B-PER", "O", "O", "B-LOC"], "e5": ["B-PER", "O", "O"]}
    written = pd.DataFrame({"id": list(tags), "text": ["Ann flew to Oslo", "Bob met Eve", "Rome is old", "Cy went to Lima",
                                                       "Di sailed past Nice", "Ed is here"],
                            "tokens": [["Ann", "flew", "to", "Oslo"], ["Bob", "met", "Eve"], ["Rome", "is", "old"],
                                       ["Cy", "went", "to", "Lima"], ["Di", "sailed", "past", "Nice"], ["Ed", "is", "here"]],
                            "intended": [np.array(t) for t in tags.values()],
                            "group": ["PER", "PER", "LOC", "PER", "LOC", "LOC"]})
    answers = pd.DataFrame({"id": list(tags), "tags": [
        np.array(["B-PER", "O", "O", "B-LOC"]),  # the same: kept
        np.array(["B-PER", "O", "O"]),  # misses one of the two people it was written to name
        None,  # unread
        np.array(["B-PER", "O", "O", "O"]),  # finds its person, misses the side place: kept
        np.array(["B-PER", "O", "O", "O"]),  # misses the place it was written to name
        np.array(["B-PER", "O", "O"]),  # agrees, but the sentence names no place, which it was written for
    ]}).set_index("id")
    answered = kind.evolve_answers(answers["tags"], written["id"])
    intended = kind.evolve_answers(written.set_index("id")["intended"], written["id"])
    agrees = [kind.evolve_agrees(w, a, g) for w, a, g in zip(intended, answered, written["group"])]
    keep, counts = keep_written(written["text"], agrees, [False] * len(written))
    assert list(keep) == [True, False, False, True, False, False] and counts["relabelled"] == 4
    batch = kind.evolve_batch(written[keep])  # the writer's full annotation: the side place stays
    assert batch["tags"].tolist() == [tags["e0"], tags["e3"]] and batch.iloc[0]["label"] == "PER"


def _config(tiny_models, corpus, out, rounds):
    return load_config(None, {
        **tiny_overrides(tiny_models, out), "task": {"name": "toy", "labels": ["negative", "positive"],
                                                      "instruction": "Classify the review's sentiment.",
                                                      "examples": [{"text": t, "label": lab} for t, lab in TASK.examples]},
        "corpus.path": str(corpus), "corpus.gold_column": "gold", "loop.mode": "evokd", "loop.evolve_rounds": rounds,
        "loop.evolve_batch": 6, "loop.evolve_shown": 3, "loop.evolve_pool": 16, "loop.evolve_min_steps": 20,
        "loop.shots": 2, "llm.synth_max_tokens": 16,
    })


def test_evokd_rounds_replay_their_history_and_a_rerun_asks_nothing_again(ray_session, tiny_models, toy_jsonl, tmp_path,
                                                                         monkeypatch):
    from freeal_ray.kinds.classification import Classification
    from freeal_ray.run import run_freeal

    shown = []  # what each writing prompt showed as the kind of text to write
    asked = []  # each write's plan and, per example, the student's mistake its prompt named
    write = Classification.evolve_write

    def recording(self, plan, analysis, style, *args, **kwargs):
        shown.append((args[-1], style))
        asked.append((plan, kwargs.get("confusion")))
        return write(self, plan, analysis, style, *args, **kwargs)

    monkeypatch.setattr(Classification, "evolve_write", recording)
    out = tmp_path / "evokd"
    run_freeal(_config(tiny_models, toy_jsonl, out, rounds=2))
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]

    # prompts show pool rows, never the writer's own examples; a copy is written again with none shown
    pool = set(tables.read_frame(out / "evolve" / "round-0" / "pool")["text"])
    firsts = [texts for desc, style in shown if "again" not in desc for texts in style]
    assert len(firsts) == 12 and all(texts and set(texts) <= pool for texts in firsts)
    assert all(texts == [] for desc, style in shown if "again" in desc for texts in style)

    # the LLM was shown the first student's real mistakes on the pool, its surest first
    probe = tables.read_frame(out / "evolve" / "round-0" / "probe")
    mistakes = probe[probe["pred"] != probe["label"]].sort_values("pred_confidence", ascending=False, kind="stable")
    assert stages["evolve-analyse-1"]["shown_wrong"] == mistakes["id"].tolist()[:3]
    assert all(i not in set(mistakes["id"]) for i in stages["evolve-analyse-1"]["shown_right"])
    # a hard prompt names one of the student's mistakes (two classes: between its class and the other
    # one), an easy one none; whether the tiny LLM's analysis leaves a round hard examples varies, so
    # the rule's own test is test_a_hard_prompt_names_a_mistake_of_the_student_s_between_its_class_and_another
    mistakes_shown = {tuple(pair) for pair in stages["evolve-analyse-1"].get("confusions", [])}
    plan, drawn = asked[0]
    assert all((one in mistakes_shown and group in one) if hard else one is None for (group, hard), one in zip(plan, drawn))
    written = tables.read_frame(out / "evolve" / "round-1" / "written")
    assert [tuple(c) if c is not None else None for c in written["confusion"]] == drawn

    # every kept example carries the label the separate call gave it; the dropped are counted
    for r in (1, 2):
        batch = tables.read_frame(out / "evolve" / f"round-{r}" / "batch")
        answers = tables.read_frame(out / "evolve" / f"round-{r}" / "answers").set_index("id")
        assert all(answers["label"][i] == lab for i, lab in zip(batch["id"], batch["label"]))
        counts = stages[f"evolve-label-{r}"]
        assert counts["kept"] == len(batch) and counts["written"] == 6
        assert counts["kept"] + counts["empty"] + counts["copied"] + counts["repeated"] + counts["relabelled"] == 6

    # the review history grows and is replayed: round 2 trains on the seeds and both batches
    kept = [len(tables.read_frame(out / "evolve" / f"round-{r}" / "batch")) for r in (0, 1, 2)]
    assert [stages[f"evolve-train-{r}"]["rows"] for r in (0, 1, 2)] == [kept[0], kept[0] + kept[1], sum(kept)]
    examples = tables.read_frame(out / "evolve" / "examples")
    assert len(examples) == sum(kept) and set(examples["round"]) <= {0, 1, 2}
    assert "analysis" in manifest["evolve"]["1"] and manifest["evolve"]["2"]["class_f1"].keys() == {"negative", "positive"}
    assert (out / "slm" / "slm.json").exists() and tables.count_rows(out / "labels") == 39
    assert "EvoKD" in (out / "report.md").read_text()
    card = (out / "slm" / "README.md").read_text()  # the model card says how its labels were made
    assert "EvoKD: the student trained on 2 seed examples" in card and "negative, positive" in card

    # a re-run of the finished run asks the LLM nothing: every stage is skipped
    finished = {k: v["finished"] for k, v in stages.items()}
    written = pd.read_parquet(tables.table_files(out / "evolve" / "round-1" / "written")[0])
    run_freeal(_config(tiny_models, toy_jsonl, out, rounds=2))
    again = json.loads((out / "manifest.json").read_text())["stages"]
    assert {k: v["finished"] for k, v in again.items()} == finished
    assert pd.read_parquet(tables.table_files(out / "evolve" / "round-1" / "written")[0]).equals(written)

