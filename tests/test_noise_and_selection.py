import numpy as np
import pandas as pd

from freeal_ray.noise import fit_loss_gmm, ramp, split_clean_noisy
from freeal_ray.retrieval import FaissIndex, nearest_demos
from freeal_ray.selection import select_class_demos


def test_gmm_split_recovers_planted_noisy_rows():
    rng = np.random.default_rng(0)
    clean = rng.gamma(2.0, 0.05, size=900)  # learned rows: small losses
    noisy = rng.normal(2.5, 0.5, size=100).clip(0.5)  # mislabelled rows: large losses
    losses = np.concatenate([clean, noisy])
    p, is_clean = split_clean_noisy(losses, threshold=0.7)
    planted = np.r_[np.ones(900, bool), np.zeros(100, bool)]
    precision = (is_clean & planted).sum() / is_clean.sum()
    recall = (is_clean & planted).sum() / planted.sum()
    assert precision > 0.98 and recall > 0.95
    assert (~is_clean[900:]).mean() > 0.95
    order = np.argsort(losses)
    assert np.all(np.diff(p[order]) <= 1e-9)  # higher loss never means more likely clean


def test_gmm_parameters_travel_and_agree():
    losses = np.r_[np.full(50, 0.1), np.full(50, 2.0)] + np.random.default_rng(1).normal(0, 0.01, 100)
    gmm = fit_loss_gmm(losses)
    assert gmm.p_clean([0.1])[0] > 0.99 and gmm.p_clean([2.0])[0] < 0.01


def test_ramp():
    assert [ramp(e, 3, 2) for e in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_kmedoids_picks_one_demo_per_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    points = np.concatenate([c + rng.normal(0, 0.1, (30, 8)) for c in centres])
    losses = rng.random(90)
    picks = select_class_demos(losses, points, top_ratio=1.0, k=3)
    assert sorted(set(p // 30 for p in picks)) == [0, 1, 2]


def test_top_ratio_keeps_lowest_losses():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(100, 4))
    losses = np.arange(100, dtype=float)
    picks = select_class_demos(losses, points, top_ratio=0.2, k=5)
    assert len(picks) == 5 and picks.max() < 20


def test_faiss_exact_and_ivf_find_true_neighbours():
    rng = np.random.default_rng(0)
    demos = rng.normal(size=(500, 16)).astype(np.float32)
    demos /= np.linalg.norm(demos, axis=1, keepdims=True)
    queries = demos[:20] + rng.normal(0, 0.01, (20, 16)).astype(np.float32)
    for index in (FaissIndex(demos), FaissIndex(demos, ivf_threshold=100)):
        picks = nearest_demos(index, queries, 3)
        assert [p[-1] for p in picks] == list(range(20))  # nearest sits last, next to the query


def test_refinery_rows_carry_one_copy_of_each_column_in_every_round():
    import pandas as pd

    from freeal_ray.kinds.classification import carry_to_refinery

    round1 = pd.DataFrame({"id": ["a"], "text": ["t"], "label": ["positive"], "pred": ["negative"], "loss": [2.0],
                           "probs": [[0.9, 0.1]], "embedding": [[0.0]], "p_clean": [0.1], "clean": [False]})
    kept = carry_to_refinery(round1)
    assert list(kept.columns) == ["id", "text", "label", "slm_pred", "prev_label", "prev_confidence"]
    # round 2 scores rows that already carry round 1's slm_pred and prev_label
    round2 = kept.assign(label="negative", pred="positive", loss=1.0, probs=[[0.2, 0.8]], embedding=[[0.0]], p_clean=0.9, clean=True)
    again = carry_to_refinery(round2)
    assert again.columns.is_unique
    assert again.loc[0, "slm_pred"] == "positive" and again.loc[0, "prev_label"] == "negative"


def test_confident_demos_come_from_each_classs_surest_answers():
    from freeal_ray.seeding import confident_demos

    rng = np.random.default_rng(0)
    labels = np.array(["neg"] * 40 + ["pos"] * 40 + [None] * 10, dtype=object)
    confidence = rng.random(90)
    embeddings = rng.normal(size=(90, 16))
    picks = confident_demos(labels, confidence, embeddings, top_ratio=0.25, k=4, seed=0)
    assert len(picks) == 8 and all(labels[i] is not None for i in picks)
    for label in ("neg", "pos"):
        rows = np.flatnonzero(labels == label)
        surest = set(rows[np.argsort(-confidence[rows])[:10]])  # the top quarter of the class
        chosen = [i for i in picks if labels[i] == label]
        assert len(chosen) == 4 and set(chosen) <= surest


def test_a_re_asked_row_keeps_its_label_unless_the_new_answer_is_surer():
    import pandas as pd

    from freeal_ray.kinds.classification import keep_surer_answer

    answers = pd.DataFrame({
        "label":           ["neg", "neg", None, "pos", "pos", "pos"],
        "confidence":      [0.90, 0.55, np.nan, 0.70, 0.60, 0.40],
        "prev_label":      ["pos", "pos", "pos", None, "pos", "pos"],
        "prev_confidence": [0.80, 0.95, 0.70, np.nan, 0.50, 0.90],
    })
    surer = keep_surer_answer(answers, "surer")
    # surer new answer wins; a hesitant one or an abstention keeps the earlier label; a row with none
    # takes the new; the same label again is no change of mind, whatever its confidence
    assert surer["label"].tolist() == ["neg", "pos", "pos", "pos", "pos", "pos"]
    assert surer["kept_previous"].tolist() == [False, True, True, False, False, False]
    assert surer["confidence"].tolist()[:2] == [0.90, 0.95]
    always = keep_surer_answer(answers, "always")
    assert always["label"].tolist()[:2] == ["neg", "neg"] and pd.isna(always["label"][2]) and not always["kept_previous"].any()


def test_which_rows_the_refinery_reasks_and_how_the_slm_fills_what_stays_unlabelled():
    from freeal_ray.kinds.classification import fill_abstentions
    from freeal_ray.stages.refine import REASK

    rows = [{"label": "positive", "clean": True}, {"label": "negative", "clean": False}, {"label": None, "clean": False}]
    assert [REASK["noisy"](r) for r in rows] == [False, True, True]
    assert [REASK["abstentions"](r) for r in rows] == [False, False, True]
    assert [REASK["none"](r) for r in rows] == [False, False, False]
    kept = pd.DataFrame({"label": ["positive", None], "slm_pred": ["negative", "negative"], "source": ["given", "given"]})
    filled = fill_abstentions(kept.copy())
    assert list(filled["label"]) == ["positive", "negative"] and list(filled["source"]) == ["given", "slm"]


def test_select_takes_each_class_s_medoids_from_its_clean_agreeing_lowest_loss_rows(tmp_path):
    """The select stage over a scores table in several parts: per class, one demo from each of its
    three clusters, never a row judged noisy, one the SLM disagrees with, or one past top_ratio."""
    from freeal_ray import tables
    from freeal_ray.config import load_config
    from freeal_ray.pipeline import RunContext
    from freeal_ray.stages.select import Select

    rng = np.random.default_rng(0)
    rows = []

    def add(kind, label, pred, clean, loss, direction, n):
        for i in range(n):
            rows.append(dict(id=f"{label}-{kind}-{i}", text=f"{label} {kind} {i}", label=label, pred=pred, clean=clean,
                             loss=loss + rng.random() * 0.05, embedding=direction * 10 + rng.normal(0, 0.1, 8)))

    axes = np.eye(8)
    for label, other, first in (("negative", "positive", 0), ("positive", "negative", 3)):
        for cluster in range(3):
            add(f"c{cluster}-", label, label, True, 0.1, axes[first + cluster], 20)
        add("noisy", label, label, False, 0.0, axes[6], 10)  # surest of all, but judged noisy
        add("disagreed", label, other, True, 0.0, axes[7], 10)  # the SLM predicts another class
        add("dear", label, label, True, 5.0, -axes[6], 15)  # clean and agreeing, but past top_ratio
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    out = tmp_path / "run"
    for start in range(0, len(frame), 64):  # three parts
        tables.write_part(frame.iloc[start:start + 64], out / "round-1" / "scores", "scores")

    config = load_config(None, {"corpus.path": str(tmp_path / "corpus.jsonl"), "output": str(out), "task": "sentiment",
                                "loop.demos_per_class": 3, "loop.top_ratio": 0.8})
    RunContext(config).run_stage(Select(1))
    demos = tables.read_frame(out / "round-1" / "demos")
    assert sorted(demos["label"]) == ["negative"] * 3 + ["positive"] * 3 and set(demos["origin"]) == {"corpus"}
    for label in ("negative", "positive"):
        ids = demos.loc[demos["label"] == label, "id"]
        assert sorted(i.split("-")[1] for i in ids) == ["c0", "c1", "c2"], ids.tolist()
