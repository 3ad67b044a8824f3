"""The NER tagger: subword alignment, per-sentence losses, and robust training in Ray Train."""

import random

import numpy as np
import pandas as pd
import pytest
import torch

from freeal_ray.ner import is_valid_bio
from freeal_ray.tagger import IGNORE, repair_bio, sentence_losses, subword_targets, word_tags
from tiny_models import NEGATIVE, NOUNS, POSITIVE

TAGS = ("O", "B-POS", "I-POS", "B-NEG", "I-NEG")


def test_a_word_is_trained_and_read_at_its_first_subword_only():
    word_ids = [None, 0, 1, 1, 2, None, None]
    assert subword_targets(word_ids, [3, 0, -1]) == [IGNORE, 3, 0, IGNORE, IGNORE, IGNORE, IGNORE]
    logits = np.zeros((7, 5))
    logits[1, 0] = logits[2, 2] = logits[3, 3] = logits[4, 4] = 1.0  # position 3 is a continuation: unread
    # O, then I-POS and I-NEG with nothing to continue (repaired to B-), and word 3 was cut off
    assert word_tags(logits, word_ids, 4, TAGS) == ["O", "B-POS", "B-NEG", "O"]


def test_sentence_loss_is_the_mean_over_tagged_words():
    logits = torch.zeros(2, 4, 5)  # uniform: every tagged word costs log(5)
    targets = torch.tensor([[0, 1, IGNORE, IGNORE], [0, 1, 2, 3]])
    losses = sentence_losses(logits, targets)
    assert torch.allclose(losses, torch.full((2,), float(np.log(5))))  # length does not make a sentence noisy
    assert torch.isnan(sentence_losses(logits[:1], torch.full((1, 4), IGNORE)))[0]


def test_repaired_predictions_are_valid_bio():
    rng = random.Random(0)
    for _ in range(200):
        tags = repair_bio([rng.choice(TAGS) for _ in range(rng.randint(1, 10))])
        assert is_valid_bio(tags)


def toy_ner(n: int, seed: int = 0) -> pd.DataFrame:
    """Sentences whose praise words are POS and blame words NEG."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(NOUNS), "was", rng.choice(POSITIVE), "not", rng.choice(NEGATIVE)]
        rng.shuffle(words)
        tags = ["B-POS" if w in POSITIVE else "B-NEG" if w in NEGATIVE else "O" for w in words]
        rows.append({"id": f"s{i}", "tokens": words, "tags": tags})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_the_gmm_split_finds_planted_noisy_sentences(ray_session, tmp_path):
    import ray

    from freeal_ray.checkpoint import SLMScorer
    from freeal_ray.noise import fit_loss_gmm
    from freeal_ray.ner import tag_indices
    from freeal_ray.training import TrainSettings, train_slm
    from tiny_models import build_tiny_encoder

    rows = toy_ner(240)
    planted = set(rows["id"].sample(frac=0.2, random_state=1))
    swap = {"B-POS": "B-NEG", "B-NEG": "B-POS", "O": "O"}
    rows["tags"] = [[swap[t] for t in tags] if i in planted else tags for i, tags in zip(rows["id"], rows["tags"])]
    rows["tag_idx"] = tag_indices(rows["tags"], TAGS, [len(t) for t in rows["tokens"]])
    settings = TrainSettings(
        encoder_path=str(build_tiny_encoder(tmp_path / "encoder")), labels=TAGS, max_length=32, epochs=6,
        warmup_epochs=3, batch_size=16, lr=5e-3, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=0.0,
        consistency_weight=1.0, ramp_epochs=1, word_dropout=0.0, seed=0,
    )
    result = train_slm(ray.data.from_pandas(rows[["tokens", "tag_idx"]]), settings, str(tmp_path / "slm"), 1, False, objective="tokens")
    assert 0.5 < result["clean_fraction"] < 0.95  # the robust epochs set some sentences' tags aside

    scored = SLMScorer(str(tmp_path / "slm"))(rows[["id", "tokens", "tags"]])
    gmm = fit_loss_gmm(scored["loss"].to_numpy(), seed=0)
    noisy = set(scored.loc[gmm.p_clean(scored["loss"].to_numpy()) <= 0.7, "id"])
    assert len(noisy & planted) >= 0.8 * len(planted)  # recall of the planted sentences
    worst = set(scored.nlargest(len(planted), "loss")["id"])
    assert len(worst & planted) >= 0.7 * len(planted)  # the planted sentences are the ones that lose most
    truth = toy_ner(240)["tags"]
    on_planted = scored["id"].isin(planted).to_numpy()
    pred = [list(p) for p in scored["pred_tags"][on_planted]]
    right = np.mean([p == list(t) for p, t in zip(pred, truth[on_planted])])
    parroted = np.mean([p == list(g) for p, g in zip(pred, rows["tags"][on_planted])])
    assert right > parroted  # on planted sentences the tagger sides with the truth, not the given tags
