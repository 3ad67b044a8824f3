"""The FreeAL loop on NER: sentences in, BIO tags out, every stage of the classification loop."""

import json

import pandas as pd
import pytest
from conftest import tiny_overrides, write_jsonl

from freeal_ray import corpus
from freeal_ray import tables
from freeal_ray.config import load_config
from freeal_ray.errors import ConfigError
from freeal_ray.evokd_entities import mistake_pairs
from freeal_ray.ner import entities, is_valid_bio
from freeal_ray.run import run_freeal
from freeal_ray.task import EntityTask
from test_tagger import toy_ner


def test_ner_tasks_come_from_presets_and_mappings():
    assert isinstance(load_config(None, {"corpus.path": "x.jsonl", "task": "conll03"}).resolved_task(), EntityTask)
    custom = load_config(None, {"corpus.path": "x.jsonl", "task": {"types": {"DRUG": "medicines"}}}).resolved_task()
    assert custom.tags == ("O", "B-DRUG", "I-DRUG")
    with pytest.raises(ConfigError, match="subset_fraction must be 1"):
        load_config(None, {"corpus.path": "x.jsonl", "task": "conll03", "loop.subset_fraction": 0.5})


def test_sentences_are_read_as_tokens_or_tokenised_text_and_bad_rows_are_named():
    batch = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "tokens": [["EU", "rejects", "it"], "Peter Blackburn, Bonn.", [], ["one", "two"]],
        "gold": [["B-ORG", "O", "O"], ["B-PER", "I-PER", "O", "B-LOC", "O"], [], ["O"]],
    })
    cfg = {"text_column": "tokens", "id_column": "id", "gold_column": "gold", "entities": True}
    out = corpus.normalise_rows(batch, cfg)
    assert out["tokens"][0] == ["EU", "rejects", "it"] and out["text"][0] == "EU rejects it"
    assert out["tokens"][1] == ["Peter", "Blackburn", ",", "Bonn", "."]
    assert out["offsets"][1][3] == [17, 21]  # raw text keeps where each token was
    assert pd.isna(out["__error"][0]) and pd.isna(out["__error"][1])
    assert "empty" in out["__error"][2]
    assert out["__error"][3] == "1 gold tags for 2 tokens"


@pytest.mark.slow
def test_the_loop_labels_sentences_end_to_end(ray_session, tiny_models, tmp_path):
    rows = toy_ner(30, seed=3).to_dict("records")
    # sentences of numbers and dashes: the instant engine finds no word in them, so they are tagged
    # all O, which the tagger learns to repeat: they become round 1's corpus demos ("none" group)
    rows += [{"id": f"n{i}", "tokens": [str(1990 + i), "-", f"0{i % 9 + 1}", "-", str(10 + i)], "tags": ["O"] * 5}
             for i in range(10)]
    rows.append({**rows[5], "id": "s5-repeat"})  # the same sentence again: tagged once, copied
    rows.append({"id": "s-bad", "tokens": ["a", "b"], "tags": ["O"]})  # tags do not fit: quarantined
    corpus = write_jsonl(tmp_path / "ner.jsonl", rows)
    out = tmp_path / "run"
    overrides = {
        **tiny_overrides(tiny_models, out),
        "task": {"name": "toy-ner", "types": {"POS": "words of praise", "NEG": "words of blame"}},
        "corpus.path": str(corpus), "corpus.text_column": "tokens", "corpus.gold_column": "tags",
        "llm.engine": "instant", "llm.model": "instant",  # answers one entity a sentence; the loop is tested
        "slm.epochs": 3, "slm.warmup_epochs": 1, "loop.rounds": 1,
        "loop.evolve_rounds": 1, "loop.evolve_batch": 6, "loop.evolve_shown": 3, "loop.evolve_pool": 12,
    }
    result = run_freeal(load_config(None, overrides))
    manifest = json.loads((out / "manifest.json").read_text())

    assert manifest["stages"]["ingest"]["quarantined"] == 1
    quarantine = tables.read_table(out / "quarantine").to_pandas()
    assert "1 gold tags for 2 tokens" in quarantine["reason"].iloc[0]

    # round 0: synthetic demos are annotated sentences; every corpus sentence got valid tags, or
    # none where the answer could not be read (an abstention)
    demos0 = tables.read_table(out / "round-0" / "demos").to_pandas()
    assert len(demos0) and all(any(t != "O" for t in tags) for tags in demos0["tags"])
    labels0 = tables.read_table(out / "round-0" / "labels").to_pandas()
    assert len(labels0) == 40 and "s5-repeat" not in set(labels0["id"])
    read = ~labels0["answer_unparsed"].astype(bool)
    assert labels0.loc[~read, "tags"].isna().all() and read.sum() > 30
    assert all(len(t) == len(k) and is_valid_bio(list(t)) for t, k in zip(labels0["tags"][read], labels0["tokens"][read]))
    assert labels0["spans_placed"].sum() > 0

    # round 1: demos are clean sentences the tagger reproduces; only noisy sentences were re-asked
    scores = tables.read_table(out / "round-1" / "scores").to_pandas().set_index("id")
    demos1 = tables.read_table(out / "round-1" / "demos").to_pandas()
    corpus_demos = demos1[demos1["origin"] == "corpus"]
    assert len(corpus_demos) and set(corpus_demos["label"]) == {"none"}
    for row in corpus_demos.itertuples():
        assert scores.loc[row.id, "clean"] and list(scores.loc[row.id, "pred_tags"]) == list(row.tags)
    # types with no clean agreeing sentence keep their round-0 demos, so no type goes unshown
    assert set(demos0["label"]) - {"none"} and set(demos0["label"]) <= set(demos1["label"])
    refined = tables.read_table(out / "round-1" / "labels" / "refined")
    noisy = set(scores.index[~scores["clean"].astype(bool)])
    assert (set(refined.to_pandas()["id"]) if refined is not None else set()) == noisy
    assert manifest["rounds"]["1"]["noisy_rows"] == len(noisy)

    assert "llm_f1" in manifest["rounds"]["0"] and {"slm_f1", "final_f1"} <= manifest["rounds"]["1"].keys()
    labels = tables.read_table(result.labels_path).to_pandas().set_index("id")
    assert len(labels) == 41 and labels.loc["s5-repeat", "duplicate_of"] == "s5"
    assert list(labels.loc["s5-repeat", "tags"]) == list(labels.loc["s5", "tags"])
    assert all(is_valid_bio(list(t)) for t in labels["tags"])
    assert "entity F1" in (out / "report.md").read_text()

    # EvoKD after FreeAL, in entities: the pool is clean sentences, the probe answers are tags, the
    # written sentences come annotated; kept ones train the tagger, never join the output labels
    pool = tables.read_frame(out / "evolve" / "round-0" / "pool")
    clean = scores[scores["clean"].astype(bool) & scores["tags"].notna()]
    assert len(pool) == min(12, len(clean)) > 0 and set(pool["id"]) <= set(clean.index)
    probe = tables.read_frame(out / "evolve" / "round-0" / "probe")
    assert all(len(p) == len(t) for p, t in zip(probe["pred"], probe["tokens"]))
    evolve = manifest["evolve"]
    assert set(evolve["0"]["probe_class_f1"]) == {"POS", "NEG"} and "analysis" in evolve["1"]
    counts = {k: evolve["1"][k] for k in ("empty", "copied", "repeated", "relabelled", "kept")}
    assert evolve["1"]["written"] == 6 == sum(counts.values()), counts
    written = tables.read_frame(out / "evolve" / "round-1" / "written")
    assert set(written["text"]) - {""} and all(len(i) == len(t) for i, t in zip(written["intended"], written["tokens"]))
    batch = tables.read_frame(out / "evolve" / "round-1" / "batch")
    assert len(batch) == counts["kept"] and all(is_valid_bio(list(t)) for t in batch["tags"])
    stages = manifest["stages"]
    assert stages["evolve-train-1"]["rows"] == tables.count_rows(out / "round-1" / "labels") + len(batch)
    assert not labels.index.str.startswith("evokd").any()
    assert (out / "slm" / "model.safetensors").read_bytes() != (out / "round-1" / "slm" / "model.safetensors").read_bytes()


def test_an_entity_task_s_examples_are_checked_and_become_tagged_demos():
    from freeal_ray.synthesis import given_entity_demos

    task = load_config(None, {"corpus.path": "x.jsonl", "task": {"types": {"PER": "people", "LOC": "places"}, "examples": [
        {"text": "Ada Lovelace lived in London .", "entities": [{"text": "Ada Lovelace", "type": "PER"}, ["London", "LOC"]]},
        {"text": "Nothing here", "entities": []}]}}).resolved_task()
    demos = given_entity_demos(task)
    assert [list(t) for t in demos["tags"]] == [["B-PER", "I-PER", "O", "O", "B-LOC", "O"], ["O", "O"]]
    assert list(demos["id"]) == ["given-0", "given-1"] and set(demos["origin"]) == {"given"}
    assert list(demos["label"]) == ["PER", "none"]
    for bad, message in (({"text": "Ada in London", "entities": [["Paris", "LOC"]]}, "lists 'Paris', which is not in its sentence"),
                         ({"text": "Ada in London", "entities": [["London", "CITY"]]}, "unknown type 'CITY'"),
                         ({"text": "Ada in London", "entities": ["London"]}, "an entity is")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, {"corpus.path": "x.jsonl", "task": {"types": {"PER": "people", "LOC": "places"}, "examples": [bad]}})


def test_standalone_evokd_on_entities_trains_a_tagger_from_annotated_seeds(ray_session, tiny_models, tmp_path):
    corpus = write_jsonl(tmp_path / "ner.jsonl", toy_ner(30, seed=4).to_dict("records"))
    out = tmp_path / "evokd"
    overrides = {
        **tiny_overrides(tiny_models, out),
        "task": {"name": "toy-ner", "types": {"POS": "words of praise", "NEG": "words of blame"}, "examples": [
            {"text": "the film was superb", "entities": [["superb", "POS"]]},
            {"text": "the plot was dull", "entities": [["dull", "NEG"]]}]},
        "corpus.path": str(corpus), "corpus.text_column": "tokens", "corpus.gold_column": "tags",
        "llm.engine": "instant", "llm.model": "instant",  # answers one entity a sentence; the loop is tested
        "loop.mode": "evokd", "loop.evolve_rounds": 2, "loop.evolve_batch": 6, "loop.evolve_shown": 3,
        "loop.evolve_pool": 12, "loop.evolve_min_steps": 20, "loop.shots": 2,
    }
    run_freeal(load_config(None, overrides))
    manifest = json.loads((out / "manifest.json").read_text())
    stages, evolve = manifest["stages"], manifest["evolve"]

    # the seeds are the task's examples, tagged on their tokens; the pool is corpus sentences the LLM annotated
    seeds = tables.read_frame(out / "evolve" / "round-0" / "batch")
    assert [list(t) for t in seeds["tags"]] == [["O", "O", "O", "B-POS"], ["O", "O", "O", "B-NEG"]]
    pool = tables.read_frame(out / "evolve" / "round-0" / "pool")
    assert len(pool) == 12 and all(len(t) == len(k) for t, k in zip(pool["tags"], pool["tokens"]) if t is not None)

    # the LLM is shown sentences the first student got wrong, and every kept sentence names the
    # entities of the type it was written for that the separate labelling call found there (the
    # instant engine's answers come from prompt hashes, so a round may keep none: the rule itself is
    # test_evokd's test_ner_a_written_sentence_the_labelling_call_reads_otherwise_is_dropped)
    probe = tables.read_frame(out / "evolve" / "round-0" / "probe")
    wrong = set(probe.loc[probe["right"] == False, "id"])  # noqa: E712 (None: no reference)
    assert set(stages["evolve-analyse-1"]["shown_wrong"]) <= wrong and len(stages["evolve-analyse-1"]["shown_wrong"]) == min(3, len(wrong))
    # each hard prompt names one of the shown sentences' mistakes involving its type, where one does
    shown = probe.set_index("id").loc[stages["evolve-analyse-1"]["shown_wrong"]]
    pairs = mistake_pairs([list(t) for t in shown["tags"]], [list(p) if p is not None else [] for p in shown["pred"]])
    assert sorted(map(tuple, stages["evolve-analyse-1"]["confusions"])) == sorted(pairs)
    written = tables.read_frame(out / "evolve" / "round-1" / "written")
    for group, hard, pair in zip(written["group"], written["hard"], written["confusion"]):
        involving = [p for p in pairs if group in p and p[0] != p[1]]  # edges alone wrong: no mistake named
        assert (tuple(pair) in involving) if hard and involving else pair is None
    kept = [len(seeds)]
    for r in (1, 2):
        batch = tables.read_frame(out / "evolve" / f"round-{r}" / "batch")
        answers = tables.read_frame(out / "evolve" / f"round-{r}" / "answers").set_index("id")
        group = tables.read_frame(out / "evolve" / f"round-{r}" / "written").set_index("id")["group"]
        for i, t in zip(batch["id"], batch["tags"]):
            of_group = [{e for e in entities(list(tags)) if e[2] == group[i]} for tags in (t, answers["tags"][i])]
            assert of_group[0] and of_group[0] == of_group[1]
        assert all(is_valid_bio(list(t)) and len(t) == len(k) for t, k in zip(batch["tags"], batch["tokens"]))
        assert evolve[str(r)]["written"] == 6 and "analysis" in evolve[str(r)]
        kept.append(len(batch))
    # the review history grows and is replayed
    assert [stages[f"evolve-train-{r}"]["rows"] for r in (0, 1, 2)] == [kept[0], kept[0] + kept[1], sum(kept)]
    assert set(evolve["2"]["class_f1"]) == {"POS", "NEG"} and "slm_f1" in evolve["2"]

    # the last student tags the corpus
    labels = tables.read_table(out / "labels").to_pandas()
    assert len(labels) == 30 and set(labels["source"]) == {"slm"}
    assert all(is_valid_bio(list(t)) and len(t) == len(k) for t, k in zip(labels["tags"], labels["tokens"]))
    assert "EvoKD" in (out / "report.md").read_text()

    # a re-run of the finished run does nothing again
    finished = {k: v["finished"] for k, v in stages.items()}
    run_freeal(load_config(None, overrides))
    assert {k: v["finished"] for k, v in json.loads((out / "manifest.json").read_text())["stages"].items()} == finished
