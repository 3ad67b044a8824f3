"""Corpus IO and bad input, through the real loop's ingest stage on local Ray."""

import json

import pandas as pd
import pytest
from conftest import write_jsonl

from freeal_ray import tables
from freeal_ray.config import load_config
from freeal_ray.errors import CorpusError
from freeal_ray.loop import FreeALRun
from freeal_ray.stages import GivenLabels

# the duplicate checks count on the driver for a small corpus and with distributed aggregates for
# a large one: each test runs both ways, so the two cannot drift apart
ON_DRIVER_OR_DISTRIBUTED = pytest.mark.parametrize("on_driver", [True, False], ids=["on-driver", "distributed"])


def ingest(path, tmp_path, **overrides):
    config = load_config(None, {"corpus.path": str(path), "output": str(tmp_path / "run"), **overrides})
    run = FreeALRun(config)
    run.ingest()
    corpus = tables.read_table(tmp_path / "run" / "corpus").to_pandas()
    quarantine = tables.read_table(tmp_path / "run" / "quarantine")
    return corpus, (quarantine.to_pandas() if quarantine is not None else pd.DataFrame(columns=["line", "reason"]))


def test_ingest_names_a_gold_label_outside_the_label_set_and_counts_long_texts(ray_session, tmp_path, capsys):
    rows = [{"id": "a", "text": "x" * 30, "gold": "positive"}, {"id": "b", "text": "short", "gold": "negative"}]
    ingest(write_jsonl(tmp_path / "ok.jsonl", rows), tmp_path, **{"corpus.gold_column": "gold", "llm.max_text_chars": 20})
    assert "1 texts are longer than llm.max_text_chars (20)" in capsys.readouterr().out
    rows.append({"id": "c", "text": "odd", "gold": "Neutral"})
    with pytest.raises(CorpusError, match="e.g. row 'c' has 'Neutral'"):
        ingest(write_jsonl(tmp_path / "bad.jsonl", rows), tmp_path / "second", **{"corpus.gold_column": "gold"})


def test_bad_rows_are_quarantined_with_reasons(ray_session, tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "text": "fine row", "extra": 1},
            '{"id": "b", "text": "broken',
            {"id": "c", "text": "   "},
            {"id": "d", "text": 42},
            {"id": "e", "text": "another fine row", "extra": 2},
        ],
    )
    corpus, quarantine = ingest(path, tmp_path)
    assert sorted(corpus["id"]) == ["a", "e"]
    assert "extra" in corpus.columns  # other columns pass through
    reasons = " | ".join(quarantine["reason"])
    assert "malformed JSON" in reasons and "empty text" in reasons and "not a string" in reasons
    assert any('"id": "b"' in line for line in quarantine["line"])


def test_columns_named_like_the_outputs_travel_renamed_with_a_notice(ray_session, tmp_path, capsys):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "a", "review": "fine row", "label": "theirs", "source": "web", "text": "a title", "note": 1},
        {"id": "b", "review": "another row", "label": "other", "source": "app", "text": "b title", "note": 2},
    ])
    corpus, _ = ingest(path, tmp_path, **{"corpus.text_column": "review"})
    by_id = corpus.set_index("id")
    assert by_id.loc["a", "text"] == "fine row" and by_id.loc["a", "input_text"] == "a title"
    assert list(by_id["input_label"]) == ["theirs", "other"] and list(by_id["input_source"]) == ["web", "app"]
    assert "label" not in corpus.columns and "source" not in corpus.columns and list(by_id["note"]) == [1, 2]
    notice = capsys.readouterr().out
    assert "label as input_label" in notice and "source as input_source" in notice and "text as input_text" in notice


def test_a_line_that_is_not_utf8_is_quarantined_and_the_rest_read(ray_session, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine row"}\n{"id": "b", "text": "caf\xe9 latin-1"}\n{"id": "c", "text": "caf\xc3\xa9 ok"}\n')
    corpus, quarantine = ingest(path, tmp_path)
    assert sorted(corpus["id"]) == ["a", "c"] and "café ok" in set(corpus["text"])
    assert list(quarantine["reason"]) == ["line 2 of bad.jsonl is not UTF-8 text (byte 24 of the line)"]
    assert '"id": "b"' in quarantine["line"].iloc[0]


@ON_DRIVER_OR_DISTRIBUTED
def test_repeated_texts_are_kept_aside_for_labelling_once(ray_session, tmp_path, monkeypatch, on_driver):
    monkeypatch.setattr(tables, "BROADCAST_ROWS", 100_000 if on_driver else 0)
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": "b", "text": "same words"}, {"id": "a", "text": "same  words "}, {"id": "c", "text": "other"},
         {"id": "d", "text": "same words"}, {"id": "e", "text": "Same words"}],  # case is a different text
    )
    corpus, _ = ingest(path, tmp_path)
    assert sorted(corpus["id"]) == ["a", "c", "e"]  # the smallest id of each text is its canonical row
    duplicates = tables.read_table(tmp_path / "run" / "duplicates").to_pandas()
    assert dict(zip(duplicates["id"], duplicates["canonical_id"])) == {"b": "a", "d": "a"}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["ingest"]["duplicate_texts"] == 2 and manifest["stages"]["ingest"]["rows"] == 3


def test_missing_column_names_the_columns(ray_session, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "body": "x"}])
    with pytest.raises(CorpusError, match="no column 'text'.*columns are: id, body|no column 'text'.*body"):
        ingest(path, tmp_path)


@ON_DRIVER_OR_DISTRIBUTED
def test_duplicate_ids_are_named(ray_session, tmp_path, monkeypatch, on_driver):
    monkeypatch.setattr(tables, "BROADCAST_ROWS", 100_000 if on_driver else 0)
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "x1", "text": "a"}, {"id": "x1", "text": "b"}, {"id": "x2", "text": "c"}])
    with pytest.raises(CorpusError, match="duplicate ids.*'x1' \\(2 rows\\)"):
        ingest(path, tmp_path)


def test_a_csv_row_that_is_not_utf8_or_of_the_wrong_width_is_quarantined_and_the_rest_read(ray_session, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'\xef\xbb\xbfid,text,n\na,fine row,1\nb,caf\xe9 latin-1,2\nc,"a quoted, multi\nline row",3\nd,too,many,fields\n')
    corpus, quarantine = ingest(path, tmp_path)
    assert sorted(corpus["id"]) == ["a", "c"] and "multi\nline" in corpus.set_index("id").loc["c", "text"]
    assert sorted(quarantine["reason"]) == ["row 3 of bad.csv (line 3) is not UTF-8 text (column 'text')",
                                            "row 5 of bad.csv (line 6) has 4 fields, its header 3"]


@ON_DRIVER_OR_DISTRIBUTED
def test_generated_ids_are_stable_and_csv_reads(ray_session, tmp_path, monkeypatch, on_driver):
    monkeypatch.setattr(tables, "BROADCAST_ROWS", 100_000 if on_driver else 0)
    path = tmp_path / "c.csv"
    pd.DataFrame({"body": ["one", "two", "two"], "gold": ["positive", "negative", "negative"]}).to_csv(path, index=False)
    first, _ = ingest(path, tmp_path, **{"corpus.id_column": None, "corpus.text_column": "body", "corpus.gold_column": "gold"})
    assert len(first) == 2  # the same text is one row
    again, _ = ingest(path, tmp_path / "again", **{"corpus.id_column": None, "corpus.text_column": "body"})
    assert sorted(first["id"]) == sorted(again["id"])


def test_parquet_and_unknown_gold_label(ray_session, tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"], "gold": ["positive", "meh"]}).to_parquet(path)
    with pytest.raises(CorpusError, match="row '2' has 'meh'"):
        ingest(path, tmp_path, **{"corpus.gold_column": "gold"})


def test_missing_file_and_unreadable_file(ray_session, tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        ingest(tmp_path / "nope.jsonl", tmp_path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match="cannot read corpus"):
        ingest(bad, tmp_path / "second")


def test_given_llm_labels_start_round_zero_without_an_llm(ray_session, tmp_path):
    import ray

    rows = [
        {"id": "a", "text": "good film", "llm": "positive", "gold": "positive"},
        {"id": "b", "text": "bad film", "llm": "negative", "gold": "negative"},
        {"id": "c", "text": "odd film", "llm": "maybe", "gold": "negative"},  # outside the label set
        {"id": "d", "text": "long film", "llm": None, "gold": "positive"},  # the LLM abstained
        {"id": "e", "text": "fine film", "llm": " Positive", "gold": "positive"},  # case and spacing differ
        {"id": "f", "text": "dull film", "llm": "maybe", "gold": "negative"},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    config = load_config(None, {
        "corpus.path": str(path), "output": str(tmp_path / "run"), "corpus.gold_column": "gold",
        "corpus.llm_label_column": "llm", "task": "sentiment",
    })
    def engines():  # what earlier tests started stays up for the session: only new ones count
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("freeal-engine")}

    before = engines()
    run = FreeALRun(config)
    run.ingest()
    run.ctx.run_stage(GivenLabels())
    labels = tables.read_table(tmp_path / "run" / "round-0" / "labels").to_pandas().set_index("id")
    assert labels["label"].to_dict() == {"a": "positive", "b": "negative", "c": None, "d": None, "e": "positive", "f": None}
    assert set(labels["source"]) == {"given"}
    metrics = run.manifest.data["rounds"]["0"]
    assert metrics["llm_calls"] == 0 and metrics["given_outside_label_set"] == 2
    assert metrics["given_unmatched_values"] == {"maybe": 2}
    assert metrics["llm_acc"] == 0.5 and metrics["llm_coverage"] == 0.5
    assert engines() == before  # no LLM was started


def test_given_labels_match_through_verbalizers_and_none_matching_is_an_error(ray_session, tmp_path):
    task = {"name": "stars", "labels": ["low", "high"], "verbalizers": {"high": "Great"}, "instruction": "Rate it."}
    rows = [{"id": "a", "text": "one", "llm": "great"}, {"id": "b", "text": "two", "llm": "LOW"}]
    run = FreeALRun(load_config(None, {"corpus.path": str(write_jsonl(tmp_path / "c.jsonl", rows)), "task": task,
                                       "output": str(tmp_path / "run"), "corpus.llm_label_column": "llm"}))
    run.ingest()
    run.ctx.run_stage(GivenLabels())
    labels = tables.read_table(tmp_path / "run" / "round-0" / "labels").to_pandas().set_index("id")
    assert labels["label"].to_dict() == {"a": "high", "b": "low"}

    rows = [{"id": str(i), "text": f"text {i}", "llm": value} for i, value in enumerate(["pos", "pos", "neg", None])]
    run = FreeALRun(load_config(None, {"corpus.path": str(write_jsonl(tmp_path / "d.jsonl", rows)), "task": "sentiment",
                                       "output": str(tmp_path / "run2"), "corpus.llm_label_column": "llm"}))
    run.ingest()
    with pytest.raises(CorpusError, match=r"no value in corpus.llm_label_column 'llm' names a label.*'pos' \(2\), 'neg' \(1\)"):
        run.ctx.run_stage(GivenLabels())


def test_ray_data_reads_parquet_without_an_actor_pool_per_read(ray_session):
    import ray

    assert ray.data.DataContext.get_current().use_datasource_v2 is False


@pytest.mark.slow
def test_given_labels_can_be_kept_with_only_the_abstentions_left_to_fill(ray_session, tiny_models, tmp_path):
    """refine_rows: abstentions, through the whole loop; `none` is the same loop re-asking nothing
    (test_noise_and_selection.py checks that rule and the SLM's fill)."""
    refine_rows = "abstentions"
    from conftest import tiny_overrides
    from tiny_models import toy_corpus

    from freeal_ray.run import run_freeal

    rows = toy_corpus(40, seed=2)
    for i, row in enumerate(rows):
        flipped = "negative" if row["gold"] == "positive" else "positive"
        row["llm"] = None if i % 8 == 3 else (flipped if i % 5 == 0 else row["gold"])  # 5 abstentions, 7 wrong labels
    given = {r["id"]: r["llm"] for r in rows}
    abstained = {i for i, label in given.items() if label is None}
    out = tmp_path / "run"
    config = load_config(None, {
        **tiny_overrides(tiny_models, out), "corpus.path": str(write_jsonl(tmp_path / "c.jsonl", rows)),
        "corpus.gold_column": "gold", "corpus.llm_label_column": "llm", "task": "sentiment",
        "llm.engine": "instant", "llm.model": "instant", "loop.refine_rows": refine_rows,
    })
    result = run_freeal(config)

    scores = tables.read_table(out / "round-1" / "scores").to_pandas()
    assert not scores.loc[scores["label"].notna(), "clean"].all()  # the default would have re-asked labelled rows
    asked = tables.read_table(out / "round-1" / "labels" / "refined")
    asked_ids = set() if asked is None else set(asked.to_pandas()["id"])
    assert asked_ids == (abstained if refine_rows == "abstentions" else set())
    labels = tables.read_table(result.labels_path).to_pandas()
    assert sorted(labels["id"]) == sorted(given), "one final label per row"
    final, source = dict(zip(labels["id"], labels["label"])), dict(zip(labels["id"], labels["source"]))
    assert {i: final[i] for i in given if i not in abstained} == {i: g for i, g in given.items() if i not in abstained}
    assert all(final[i] is not None for i in abstained)
    assert {source[i] for i in abstained} <= {"llm", "slm"} and all(source[i] == "given" for i in given if i not in abstained)
