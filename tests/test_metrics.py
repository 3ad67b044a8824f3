"""Label quality counted on the workers matches the same counts taken on plain lists."""

import numpy as np
import pandas as pd
import ray

from freeal_ray.metrics import confusion, confusion_of, entity_quality, label_quality


def test_label_quality_over_many_blocks_matches_the_plain_count(ray_session):
    rng = np.random.default_rng(0)
    labels = ("a", "b", "c")
    gold = rng.choice(labels, 10_000).tolist()
    pred = [p if rng.random() > 0.1 else None for p in rng.choice(labels + ("zzz",), 10_000)]
    ds = ray.data.from_pandas(pd.DataFrame({"gold": gold, "label": pred})).repartition(7)

    matrix, abstained = confusion(ds, "label", labels)
    want_matrix, want_abstained = confusion_of(gold, pred, labels)
    assert (matrix == want_matrix).all() and abstained == want_abstained > 0
    q = label_quality(ds, "label", labels)
    assert q["n"] == 10_000 and abs(q["acc"] - np.trace(want_matrix) / 10_000) < 1e-12


def test_entity_quality_sums_sentences_across_blocks(ray_session):
    gold = [["B-PER", "O"], ["B-LOC", "I-LOC"], None, ["O", "B-ORG"]] * 50
    pred = [["B-PER", "O"], ["B-LOC", "O"], ["B-PER"], None] * 50
    ds = ray.data.from_pandas(pd.DataFrame({"gold_tags": gold, "tags": pred})).repartition(5)
    q = entity_quality(ds, "tags")
    # per group of four: 1 exact match (PER); gold entities PER, LOC, ORG; predicted PER, LOC (B-LOC alone)
    assert (q["gold_entities"], q["predicted_entities"]) == (150, 100)
    assert abs(q["precision"] - 0.5) < 1e-12 and abs(q["recall"] - 50 / 150) < 1e-12


def test_split_quality_and_label_moves_count_against_gold(ray_session):
    from freeal_ray.metrics import label_moves, split_quality

    rows = pd.DataFrame({
        "gold":       ["a", "b", "a", None, "b", "a"],
        "label":      ["a", "a", None, "b", "b", "b"],
        "clean":      [True, False, False, False, True, True],
        "prev_label": ["b", "a", "a", "a", "b", "b"],
    })
    ds = ray.data.from_pandas(pd.concat([rows] * 50, ignore_index=True)).repartition(4)
    split = split_quality(ds)
    # labelled rows with gold: row 0 right/clean, row 1 wrong/noisy, row 4 right/clean, row 5 wrong/clean
    assert split == {"noisy_precision": 1.0, "noisy_recall": 0.5}
    # row 0 wrong -> right (fixed), row 2 right -> abstained (broken); row 3 has no gold
    assert label_moves(ds) == {"fixed": 50, "broken": 50}


def test_a_table_counted_on_the_driver_scores_as_a_ray_pass_does(ray_session, tmp_path):
    import ray

    from freeal_ray import metrics as M
    from freeal_ray import tables

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    frame = pd.DataFrame({
        "id": [str(i) for i in range(300)], "gold": rng.choice(labels, 300),
        "label": [None if x == "none" else x for x in rng.choice(labels + ["none"], 300)],
        "prev_label": rng.choice(labels, 300), "clean": rng.random(300) < 0.6,
    })
    tables.write_table(ray.data.from_pandas(frame).repartition(4), tmp_path / "t")
    ds, local = tables.read_table(tmp_path / "t"), tables.LocalTable(tmp_path / "t")
    assert M.label_quality(local, "label", labels) == M.label_quality(ds, "label", labels)
    assert M.split_quality(local) == M.split_quality(ds) and M.label_moves(local) == M.label_moves(ds)
    clean = tables.LocalTable(tmp_path / "t", where="clean")
    assert M.label_quality(clean, "label", labels) == M.label_quality(ds.filter(lambda r: r["clean"]), "label", labels)
    filled = tables.LocalTable(tmp_path / "t", transform=lambda b: b.assign(label=b["label"].fillna("a")))
    assert M.label_quality(filled, "label", labels)["coverage"] == 1.0
