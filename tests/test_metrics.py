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
