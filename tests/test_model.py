"""The trained SLM outside the loop: load_model(path).predict(texts)."""

import numpy as np
import pandas as pd
import pytest
import torch

from freeal_ray import load_model
from freeal_ray.checkpoint import SLMScorer, save_checkpoint
from freeal_ray.errors import FreeALError
from freeal_ray.model import entity_spans
from freeal_ray.slm import SLMClassifier
from freeal_ray.tagger import TokenTagger
from tiny_models import toy_corpus

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _save(model, encoder, folder, classes, head):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    return save_checkpoint(model.eval(), AutoTokenizer.from_pretrained(encoder), classes, 32, folder, head=head)


def test_load_model_predicts_what_the_loops_scorer_does(tiny_models, tmp_path):
    torch.manual_seed(0)
    model = SLMClassifier(str(tiny_models["encoder"]), ["negative", "positive"])
    _save(model, tiny_models["encoder"], tmp_path / "run" / "slm", ["negative", "positive"], "classifier")
    texts = [r["text"] for r in toy_corpus(20, seed=4)]

    predicted = load_model(tmp_path / "run").predict(texts)  # a run folder finds its slm/
    scored = SLMScorer(str(tmp_path / "run" / "slm"))(pd.DataFrame({"text": texts}))

    assert [p["label"] for p in predicted] == list(scored["pred"])
    for p, probs in zip(predicted, scored["probs"]):
        assert np.allclose([p["probs"]["negative"], p["probs"]["positive"]], probs, atol=1e-6)
        assert p["confidence"] == pytest.approx(max(probs), abs=1e-6)
    again = load_model(tmp_path / "run" / "slm").predict(texts[:3], batch_size=2)  # batching changes nothing
    assert [p["label"] for p in again] == [p["label"] for p in predicted[:3]]


def test_a_plain_transformers_pipeline_loads_the_slm_folder_and_agrees_with_predict(tiny_models, tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    folder = _save(SLMClassifier(str(tiny_models["encoder"]), ["negative", "positive"]), tiny_models["encoder"],
                   tmp_path / "slm", ["negative", "positive"], "classifier")
    texts = [r["text"] for r in toy_corpus(12, seed=5)]
    ours = load_model(folder).predict(texts)

    theirs = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")(texts)

    for p, scores in zip(ours, theirs):
        by_label = {s["label"]: s["score"] for s in scores}
        assert max(by_label, key=by_label.get) == p["label"]
        assert by_label == pytest.approx(p["probs"], abs=1e-5)

    # NER on the default encoder's WordPiece tokenizer (the tiny one's byte-level pieces have no
    # word boundaries a pipeline can read): every word B-LOC, so every word is an entity
    from freeal_ray.model_store import resolve_encoder

    encoder = resolve_encoder("all-minilm-l6-v2")
    tagger = TokenTagger(str(encoder), TAGS)
    with torch.no_grad():
        tagger.model.classifier.weight.zero_()
        tagger.model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))
    folder = _save(tagger, encoder, tmp_path / "ner", TAGS, "tagger")
    text = "José met Anna in Zürich, then Paris (again)."
    [ours] = load_model(folder).predict([text])
    # "first": a word's tag is its first subword's, as the tagger was trained and predict reads it
    theirs = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")(text)
    assert len(ours["entities"]) == 12
    assert [(e["entity_group"], e["start"], e["end"]) for e in theirs] == [(e["type"], e["start"], e["end"]) for e in ours["entities"]]


def test_the_onnx_export_scores_as_predict_does(tiny_models, tmp_path):
    import onnxruntime
    from transformers import AutoTokenizer

    from freeal_ray.cli import main
    from freeal_ray.export import export_onnx

    torch.manual_seed(0)
    _save(SLMClassifier(str(tiny_models["encoder"]), ["negative", "positive"]), tiny_models["encoder"],
          tmp_path / "run" / "slm", ["negative", "positive"], "classifier")
    assert main(["export", "--model", str(tmp_path / "run"), "--output", str(tmp_path / "onnx")]) == 0
    texts = [r["text"] for r in toy_corpus(9, seed=6)]  # lengths differ: the graph's axes are dynamic
    ours = load_model(tmp_path / "run").predict(texts)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
    [logits] = session.run(["logits"], {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    assert np.allclose(probs, [[p["probs"]["negative"], p["probs"]["positive"]] for p in ours], atol=1e-5)

    # NER: one row of logits per token, as the torch model gives them
    tagger = TokenTagger(str(tiny_models["encoder"]), TAGS)
    _save(tagger, tiny_models["encoder"], tmp_path / "ner", TAGS, "tagger")
    export_onnx(tmp_path / "ner", tmp_path / "ner-onnx")
    words = ["José", "met", "Anna", "in", "Zürich"]
    encoded = tokenizer([words], is_split_into_words=True, return_tensors="np")
    [logits] = onnxruntime.InferenceSession(str(tmp_path / "ner-onnx" / "model.onnx")).run(
        ["logits"], {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    assert logits.shape == (1, encoded["input_ids"].shape[1], len(TAGS))
    with torch.no_grad():
        theirs = tagger.model(input_ids=torch.from_numpy(encoded["input_ids"]),
                              attention_mask=torch.from_numpy(encoded["attention_mask"])).logits.numpy()
    assert np.allclose(logits, theirs, atol=1e-4)


def test_onnx_export_refuses_a_folder_with_no_model(tmp_path):
    from freeal_ray.export import export_onnx

    with pytest.raises(FreeALError, match="no trained SLM"):
        export_onnx(tmp_path, tmp_path / "out")


def test_load_model_names_a_folder_with_no_model(tmp_path):
    with pytest.raises(FreeALError, match="no trained SLM"):
        load_model(tmp_path)


def test_ner_entities_map_back_to_the_raw_characters(tiny_models, tmp_path):
    tagger = TokenTagger(str(tiny_models["encoder"]), TAGS)
    with torch.no_grad():  # every word tagged B-PER: each word is an entity of its own
        tagger.model.classifier.weight.zero_()
        tagger.model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0]))
    _save(tagger, tiny_models["encoder"], tmp_path / "slm", TAGS, "tagger")
    text = "José  met José, in Zürich (again)!"

    [out] = load_model(tmp_path / "slm").predict([text])

    assert out["tokens"] == ["José", "met", "José", ",", "in", "Zürich", "(", "again", ")", "!"]
    assert all(t == "B-PER" for t in out["tags"])
    spans = [(e["start"], e["end"], e["text"]) for e in out["entities"]]
    assert spans[0] == (0, 4, "José") and spans[2] == (10, 14, "José")  # the repeat is found where it is
    assert all(text[s:e] == t for s, e, t in spans) and spans[5] == (19, 25, "Zürich")


def test_entity_spans_cover_multiword_entities_with_their_own_spacing():
    text = "New  York's mayor"
    tokens, offsets = ["New", "York's", "mayor"], [(0, 3), (5, 11), (12, 17)]
    [entity] = entity_spans(text, tokens, offsets, ["B-LOC", "I-LOC", "O"])
    assert (entity["start"], entity["end"], entity["text"], entity["type"]) == (0, 11, "New  York's", "LOC")
    [bare] = entity_spans(None, tokens, None, ["O", "O", "B-PER"])  # token lists: no characters to point at
    assert bare == {"type": "PER", "text": "mayor", "token_start": 2, "token_end": 3}


def test_predict_over_a_corpus_equals_the_api_quarantines_bad_rows_and_resumes(ray_session, tiny_models, tmp_path):
    import json as _json

    from freeal_ray.predict import predict_corpus
    from freeal_ray import tables

    torch.manual_seed(0)
    _save(SLMClassifier(str(tiny_models["encoder"]), ["negative", "positive"]), tiny_models["encoder"], tmp_path / "slm", ["negative", "positive"], "classifier")
    rows = toy_corpus(30, seed=8)
    lines = [_json.dumps({"id": r["id"], "text": r["text"]}) for r in rows]
    lines[5] = '{"id": "broken", "text": '  # malformed JSON
    lines[9] = _json.dumps({"id": "empty", "text": "  "})
    (tmp_path / "new.jsonl").write_text("\n".join(lines) + "\n")

    counts = predict_corpus(tmp_path / "slm", str(tmp_path / "new.jsonl"), tmp_path / "out", batch_size=8)

    assert counts == {"predicted": 28, "quarantined": 2}
    got = tables.read_frame(tmp_path / "out" / "predictions").set_index("id")
    kept = [r for i, r in enumerate(rows) if i not in (5, 9)]
    expected = load_model(tmp_path / "slm").predict([r["text"] for r in kept])
    assert list(got.loc[[r["id"] for r in kept], "label"]) == [p["label"] for p in expected]
    assert np.allclose(np.stack(got.loc[[r["id"] for r in kept], "probs"]), [list(p["probs"].values()) for p in expected], atol=1e-6)
    reasons = " ".join(tables.read_frame(tmp_path / "out" / "quarantine").fillna("").astype(str).to_numpy().ravel())
    assert "empty text" in reasons and "JSON" in reasons
    # a re-run finds every row done and asks the model about none
    assert predict_corpus(tmp_path / "slm", str(tmp_path / "new.jsonl"), tmp_path / "out", batch_size=8)["predicted"] == 0
    assert len(tables.read_frame(tmp_path / "out" / "predictions")) == 28


def test_predict_gives_ner_entities_with_offsets_into_each_raw_row(ray_session, tiny_models, tmp_path):
    import json as _json

    from freeal_ray.predict import predict_corpus
    from freeal_ray import tables

    tagger = TokenTagger(str(tiny_models["encoder"]), TAGS)
    with torch.no_grad():
        tagger.model.classifier.weight.zero_()
        tagger.model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))  # every word B-LOC
    _save(tagger, tiny_models["encoder"], tmp_path / "slm", TAGS, "tagger")
    texts = {"a": "Café in Zürich, again.", "b": "Paris  and  Paris"}
    (tmp_path / "s.jsonl").write_text("".join(_json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))

    predict_corpus(tmp_path / "slm", str(tmp_path / "s.jsonl"), tmp_path / "out")

    got = tables.read_frame(tmp_path / "out" / "predictions").set_index("id")
    for row_id, text in texts.items():
        entities = list(got.loc[row_id, "entities"])
        assert [text[e["start"]:e["end"]] for e in entities] == [e["text"] for e in entities] == list(got.loc[row_id, "tokens"])
    assert [e["start"] for e in got.loc["b", "entities"]] == [0, 7, 12]


def test_slm_actors_ask_for_a_gpu_each_when_the_slm_runs_on_gpus(ray_session):
    from freeal_ray.checkpoint import resolve_device, scorer_compute

    gpu, cpu = scorer_compute(True), scorer_compute(False)
    assert gpu["num_gpus"] == 1 and gpu["compute"].min_size == 1 and "num_gpus" not in cpu
    assert cpu["compute"].min_size == cpu["compute"].max_size == 1
    assert resolve_device("auto") == ("cuda" if __import__("torch").cuda.is_available() else "cpu")


def test_the_model_host_scores_as_the_scorer_does_in_one_process_across_stages(ray_session, tiny_models, tmp_path):
    import os

    import ray

    from freeal_ray import model_host

    texts = [r["text"] for r in toy_corpus(30, seed=6)]
    folders = []
    for i in range(model_host.KEPT + 1):  # one checkpoint more than the host keeps
        torch.manual_seed(i)
        folders.append(_save(SLMClassifier(str(tiny_models["encoder"]), ["negative", "positive"]), tiny_models["encoder"],
                             tmp_path / f"slm{i}", ["negative", "positive"], "classifier"))
    pids = set()
    for folder in folders:
        rows = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts})
        ds = ray.data.from_pandas(rows).repartition(3)
        hosted = model_host.map_with_model(ds, "freeal_ray.checkpoint:SLMScorer", {"folder": str(folder)}, {},
                                           batch_format="pandas", batch_size=8).to_pandas()
        direct = SLMScorer(str(folder))(rows)
        hosted = hosted.set_index("id").loc[rows["id"]]
        assert list(hosted["pred"]) == list(direct["pred"])
        assert np.allclose(np.stack(hosted["probs"]), np.stack(direct["probs"]), atol=1e-5)
        pid, held = ray.get(model_host.model_host().__ray_call__.remote(lambda host: (os.getpid(), list(host.callables))))
        pids.add(pid)
    assert len(pids) == 1  # every map ran in the same long-lived process
    assert len(held) == model_host.KEPT  # the oldest scorer was let go

    # where the host may not serve (a CPU-less head node, GPU scoring), an actor pool gives the same
    from freeal_ray.checkpoint import scorer_compute

    pooled = model_host.map_with_model(ds, "freeal_ray.checkpoint:SLMScorer", {"folder": str(folders[-1])},
                                       scorer_compute(False), hosted=False, batch_format="pandas", batch_size=8).to_pandas()
    assert list(pooled.set_index("id").loc[rows["id"], "pred"]) == list(direct["pred"])
