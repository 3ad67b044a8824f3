"""Robust self-training of a tiny encoder in a real Ray Train TorchTrainer, then scoring."""

import dataclasses
import random

import numpy as np
import pandas as pd
import pytest

from freeal_ray.checkpoint import SLMScorer
from freeal_ray.noise import fit_loss_gmm
from freeal_ray.training import TrainSettings, train_slm
from freeal_ray.training.objectives import refined_targets, word_dropout
from tiny_models import toy_corpus


def test_training_learns_through_planted_noise_and_scoring_flags_it(ray_session, tiny_models, tmp_path):
    import ray

    rows = pd.DataFrame(toy_corpus(200, seed=3))
    labels = ("negative", "positive")
    rng = np.random.default_rng(0)
    flipped = rng.random(len(rows)) < 0.15
    given = [labels[1 - labels.index(g)] if f else g for g, f in zip(rows["gold"], flipped)]
    train = pd.DataFrame({"text": rows["text"], "label_idx": [labels.index(x) for x in given]})
    train.loc[:9, "label_idx"] = -1  # abstained rows still feed the consistency loss
    settings = TrainSettings(
        encoder_path=str(tiny_models["encoder"]), labels=labels, max_length=32, epochs=7, warmup_epochs=4,
        batch_size=16, lr=2e-3, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0,
        consistency_weight=1.0, ramp_epochs=2, word_dropout=0.15, seed=0,
    )
    metrics = train_slm(ray.data.from_pandas(train), settings, str(tmp_path / "slm"), num_workers=1, use_gpu=False)
    assert metrics["robust"] is True and 0.5 < metrics["clean_fraction"] <= 1.0

    scorer = SLMScorer(str(tmp_path / "slm"))
    scored = scorer(pd.DataFrame({"text": rows["text"], "label": given}))
    assert (scored["pred"] == rows["gold"]).mean() > 0.9  # learned the truth, not the flips
    p_clean = fit_loss_gmm(scored["loss"].to_numpy()).p_clean(scored["loss"].to_numpy())
    assert p_clean[flipped].mean() < 0.3 < 0.7 < p_clean[~flipped].mean()
    assert len(scored["embedding"].iloc[0]) == 32


def test_a_corpus_sorted_by_class_trains_as_well_as_a_shuffled_one(ray_session, tiny_models, tmp_path):
    import ray

    rows = pd.DataFrame(toy_corpus(240, seed=5))
    labels = ("negative", "positive")
    settings = TrainSettings(
        encoder_path=str(tiny_models["encoder"]), labels=labels, max_length=32, epochs=2, warmup_epochs=2,
        batch_size=16, lr=2e-3, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0,
        consistency_weight=1.0, ramp_epochs=2, word_dropout=0.15, seed=0,
    )
    held_out = pd.DataFrame(toy_corpus(100, seed=6))
    acc = {}
    for order, frame in (("sorted", rows.sort_values("gold", kind="stable")), ("shuffled", rows.sample(frac=1.0, random_state=0))):
        train = pd.DataFrame({"text": frame["text"], "label_idx": [labels.index(g) for g in frame["gold"]]})
        train_slm(ray.data.from_pandas(train.reset_index(drop=True)), settings, str(tmp_path / order), 1, False)
        scored = SLMScorer(str(tmp_path / order))(held_out[["text"]])
        acc[order] = (scored["pred"] == held_out["gold"]).mean()
    # single-class batches (a 64-row shuffle window) leave the model predicting the last class seen
    assert acc["shuffled"] > 0.9 and acc["sorted"] >= acc["shuffled"] - 0.05, acc


def test_a_fit_in_this_process_equals_one_in_a_ray_train_worker(ray_session, tiny_models, tmp_path, monkeypatch):
    import ray

    from freeal_ray.training import driver

    # on the test's one-node local cluster a one-worker CPU fit runs here; GPUs or DDP keep workers
    assert driver.fits_here(1, False) and not driver.fits_here(2, False) and not driver.fits_here(1, True)
    rows = pd.DataFrame(toy_corpus(60, seed=7))
    labels = ("negative", "positive")
    train = pd.DataFrame({"text": rows["text"], "label_idx": [labels.index(g) for g in rows["gold"]]})
    settings = TrainSettings(
        encoder_path=str(tiny_models["encoder"]), labels=labels, max_length=32, epochs=3, warmup_epochs=1,
        batch_size=16, lr=2e-3, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0,
        consistency_weight=1.0, ramp_epochs=1, word_dropout=0.15, seed=0,
    )
    here = train_slm(ray.data.from_pandas(train), settings, str(tmp_path / "here"), 1, False)
    monkeypatch.setattr(driver, "fits_here", lambda *_: False)
    worker = train_slm(ray.data.from_pandas(train), settings, str(tmp_path / "worker"), 1, False)
    assert here == pytest.approx(worker, rel=1e-4)
    held_out = pd.DataFrame(toy_corpus(40, seed=8))[["text"]]
    a, b = SLMScorer(str(tmp_path / "here"))(held_out), SLMScorer(str(tmp_path / "worker"))(held_out)
    assert (a["pred"] == b["pred"]).all()
    assert np.allclose(np.stack(a["probs"]), np.stack(b["probs"]), atol=1e-4)


def test_word_dropout_keeps_a_word():
    rng = random.Random(0)
    assert word_dropout("one", 0.99, rng) == "one"
    views = {word_dropout("a b c d e f g h", 0.3, rng) for _ in range(20)}
    assert len(views) > 1


def test_refined_targets_trust_the_label_as_far_as_the_gmm_does():
    import torch

    target = torch.tensor([0, 1, -1])
    p_clean = torch.tensor([1.0, 0.0, 0.0])
    logits = torch.tensor([[0.0, 5.0], [4.0, 0.0], [1.0, 0.0]])
    soft = refined_targets(target, p_clean, logits, temperature=0.5)
    assert torch.allclose(soft[0], torch.tensor([1.0, 0.0]))  # clean: the given label
    assert soft[1, 0] > 0.99  # noisy: the SLM's own (sharpened) guess
    assert soft[2].sum() == 0  # unlabelled: nothing to learn from
    half = refined_targets(target[:1], torch.tensor([0.5]), torch.tensor([[0.0, 0.0]]), 0.5)
    assert torch.allclose(half, torch.tensor([[0.75, 0.25]]))
    floored = refined_targets(target, p_clean, logits, temperature=0.5, label_floor=0.5)
    assert torch.allclose(floored[0], torch.tensor([1.0, 0.0]))  # above the floor: unchanged
    assert 0.5 < floored[1, 1] < 0.51  # noisy: the label keeps half, the confident guess the rest
    assert floored[2].sum() == 0


def test_the_output_head_learns_at_its_own_rate_and_the_encoder_at_lr():
    import torch

    from freeal_ray.training.settings import make_optimizer

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
            self.classifier = torch.nn.Linear(4, 2)  # the name Hugging Face gives a head

    model = Model()
    settings = TrainSettings("unused", ("a", "b"), 8, 1, 0, 2, 1e-4, 0.7, 4.0, 1.0, 1.0, 2, 0.1, 0, head_lr=2e-3)
    groups = make_optimizer(model, settings).param_groups
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in groups}
    assert by_lr == {1e-4: 40, 2e-3: 10}
    same = make_optimizer(model, dataclasses.replace(settings, head_lr=0.0)).param_groups
    assert {g["lr"] for g in same} == {1e-4}


def test_a_small_training_set_gets_epochs_up_to_the_step_floor_and_a_large_one_keeps_its_own():
    from freeal_ray.training.settings import with_min_steps

    s = TrainSettings(
        encoder_path="unread", labels=("a", "b"), max_length=32, epochs=6, warmup_epochs=3,
        batch_size=32, lr=5e-5, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0,
        consistency_weight=1.0, ramp_epochs=2, word_dropout=0.15, seed=0,
    )
    small = with_min_steps(s, rows=200, workers=1, min_steps=80)  # 7 steps an epoch
    assert (small.epochs, small.warmup_epochs, small.ramp_epochs) == (12, 6, 4)
    assert with_min_steps(s, rows=200, workers=2, min_steps=80).epochs == 20  # 4 steps an epoch on each worker
    assert with_min_steps(s, rows=2000, workers=1, min_steps=80) == s
    assert with_min_steps(s, rows=200, workers=1, min_steps=0) == s
