"""Incremental mode: each round the LLM annotates a fresh share of the corpus, the SLM the rest."""

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides, write_jsonl

from freeal_ray import tables
from freeal_ray.checkpoint import SLMScorer
from freeal_ray.config import load_config
from freeal_ray.errors import ConfigError
from freeal_ray.run import run_freeal
from freeal_ray.sampling import draw_cutoff, row_draws, uncertainty
from tiny_models import toy_corpus


def test_row_draws_are_stable_uniform_and_seeded():
    ids = [f"row-{i}" for i in range(4000)]
    draws = row_draws(ids, seed=0)
    assert np.array_equal(draws, row_draws(ids, seed=0))
    assert ((draws >= 0) & (draws < 1)).all()
    assert abs(draws.mean() - 0.5) < 0.02 and abs((draws < 0.1).mean() - 0.1) < 0.02
    assert np.corrcoef(draws, row_draws(ids, seed=1))[0, 1] < 0.05


def test_the_smallest_draws_from_under_a_cutoff_are_the_full_sorts(ray_session):
    import ray

    from freeal_ray.stages.subsets import smallest_draws

    ids = [f"row-{i}" for i in range(6000)]
    got = smallest_draws(ray.data.from_items([{"id": i} for i in ids]), 60, len(ids), seed=3).to_pandas()["id"].tolist()
    assert got == [ids[i] for i in np.argsort(row_draws(ids, 3))[:60]]
    assert draw_cutoff(60, len(ids)) < 0.03 and draw_cutoff(60, 70) == 1.0  # sorts a thirtieth of the rows, or all


def test_uncertainty_ranks_the_unsure_first():
    probs = np.array([[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [1 / 3, 1 / 3, 1 / 3]])
    entropy = uncertainty(probs, "entropy")
    assert entropy[0] < entropy[1] < entropy[2]
    margin = uncertainty(probs, "margin")
    assert margin[0] < margin[1] < margin[2] <= 1.0
    with pytest.raises(ValueError, match="unknown uncertainty strategy"):
        uncertainty(probs, "random")


def test_subset_needs_a_round_for_the_slm():
    with pytest.raises(ConfigError, match="loop.rounds >= 1"):
        load_config(None, {"corpus.path": "x.jsonl", "loop.subset_fraction": 0.1, "loop.rounds": 0})


@pytest.mark.slow
def test_each_round_annotates_fresh_rows_and_the_slm_labels_the_rest(ray_session, tiny_models, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", toy_corpus(40, seed=2))  # 40 distinct texts
    out = tmp_path / "run"
    overrides = {
        **tiny_overrides(tiny_models, out),
        "corpus.path": str(corpus), "corpus.gold_column": "gold", "task": "sentiment",
        "llm.engine": "instant", "llm.model": "instant",  # the LLM's answers are not what is tested here
        "loop.rounds": 2, "loop.subset_fraction": 0.25, "loop.subset_strategy": "entropy",
        "loop.round0_demos": "mixed", "loop.seed_rows": 8,
    }
    result = run_freeal(load_config(None, overrides))

    def ids(*parts):
        return set(tables.read_table(out.joinpath(*parts)).to_pandas()["id"])

    # round 0: the 10 rows with the smallest hashed draws, nothing else
    round0 = ids("round-0", "labels")
    all_ids = [r["id"] for r in toy_corpus(40, seed=2)]
    draws = dict(zip(all_ids, row_draws(all_ids, seed=0)))
    assert round0 == set(sorted(all_ids, key=draws.get)[:10])

    # round 1's SLM also saw unannotated rows, for its consistency loss
    unlabelled = ids("round-1", "unlabelled")
    assert unlabelled and not unlabelled & round0

    # round 1 adds the 10 rows its SLM is least sure about, among those the LLM had not seen
    added = ids("round-1", "labels", "added")
    assert len(added) == 10 and not added & round0
    rest = pd.DataFrame([r for r in toy_corpus(40, seed=2) if r["id"] not in round0])
    scored = SLMScorer(str(out / "round-1" / "slm"))(rest)
    entropy = uncertainty(np.stack(scored["probs"].to_numpy()), "entropy")
    assert added == set(rest["id"].to_numpy()[np.argsort(-entropy, kind="stable")[:10]])
    assert ids("round-1", "labels") == round0 | added

    # the last round adds nothing; the SLM labels the 20 rows no LLM saw
    assert not (out / "round-2" / "labels" / "added").exists()
    labels = tables.read_table(result.labels_path).to_pandas()
    assert sorted(labels["id"]) == sorted(all_ids) and labels["label"].notna().all()
    by_slm = set(labels.loc[labels["source"] == "slm", "id"])
    assert set(all_ids) - round0 - added <= by_slm

    rounds = result.rounds
    assert rounds["1"]["annotated_rows"] == 20 and rounds["1"]["added_rows"] == 10
    assert rounds["2"]["slm_labelled_rows"] == 20
    assert rounds["0"]["llm_calls"] == 10 + 8  # the seed rows' zero-shot calls count in round 0

    # mixed round-0 demos: the written ones and the LLM's own answers on seed rows, as it gave them
    demos = tables.read_table(out / "round-0" / "demos").to_pandas()
    seed = tables.read_table(out / "round-0" / "seed-answers").to_pandas().set_index("id")
    assert set(demos["origin"]) == {"synthetic", "seed"} and len(seed) == 8
    picked = demos[demos["origin"] == "seed"].set_index("id")
    assert (picked["label"] == seed.loc[picked.index, "label"]).all()
    assert rounds["1"]["llm_calls"] == 10 + rounds["1"]["noisy_rows"]
