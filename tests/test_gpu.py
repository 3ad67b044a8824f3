"""The SLM on a GPU: the one training loop (fit_epochs, what every Ray Train worker runs) and the
trained model's predictions, on CUDA. Skipped where no GPU is visible, as on the CPU machines CI
runs on; on a GPU machine: `python -m pytest tests/test_gpu.py`. Ray Train only places the model
and hands out batches, so the loop, the losses and the model API are what could leave a tensor on
the wrong device, and none of them needs Ray here."""

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tiny_models import build_tiny_encoder, toy_corpus  # noqa: E402


def _settings(encoder, labels, **changes):
    from freeal_ray.training import TrainSettings

    base = dict(encoder_path=str(encoder), labels=labels, max_length=32, epochs=7, warmup_epochs=4, batch_size=16,
                lr=2e-3, gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0, consistency_weight=1.0, ramp_epochs=2,
                word_dropout=0.15, seed=0)
    return TrainSettings(**{**base, **changes})


def _fit_on_cuda(objective_name: str, frame: pd.DataFrame, settings, folder):
    """fit_epochs on the GPU over `frame`, reshuffled each epoch; the model saved to `folder`."""
    from freeal_ray.training.objectives import OBJECTIVES
    from freeal_ray.training.settings import make_optimizer
    from freeal_ray.training.worker import fit_epochs

    torch.manual_seed(0)
    objective = OBJECTIVES[objective_name](settings, torch.device("cuda"), 0)
    model = objective.build_model().to("cuda")
    rng = np.random.default_rng(0)

    def batches(order):
        for start in range(0, len(order), settings.batch_size):
            part = frame.iloc[order[start : start + settings.batch_size]]
            yield {c: part[c].to_numpy() for c in frame.columns}

    metrics = fit_epochs(model, objective, make_optimizer(model, settings), settings,
                         epoch_batches=lambda epoch: batches(rng.permutation(len(frame))),
                         all_batches=lambda: batches(np.arange(len(frame))))
    assert all(p.is_cuda for p in model.parameters())
    objective.save(model.cpu(), str(folder))
    return metrics


def test_robust_training_on_the_gpu_learns_through_planted_noise_and_predicts_there(tmp_path):
    from freeal_ray import load_model

    labels = ("negative", "positive")
    rows = pd.DataFrame(toy_corpus(200, seed=3))
    flipped = np.random.default_rng(0).random(len(rows)) < 0.15
    given = [labels[1 - labels.index(g)] if f else g for g, f in zip(rows["gold"], flipped)]
    train = pd.DataFrame({"text": rows["text"], "label_idx": [labels.index(x) for x in given]})
    train.loc[:9, "label_idx"] = -1  # abstentions feed only the consistency loss
    metrics = _fit_on_cuda("sentences", train, _settings(build_tiny_encoder(tmp_path / "encoder"), labels), tmp_path / "slm")
    assert metrics["robust"] is True and 0.5 < metrics["clean_fraction"] <= 1.0

    held_out = pd.DataFrame(toy_corpus(200, seed=6))
    on_gpu, on_cpu = load_model(tmp_path / "slm"), load_model(tmp_path / "slm", device="cpu")
    assert next(on_gpu.checkpoint.model.parameters()).is_cuda
    gpu_labels = [p["label"] for p in on_gpu.predict(list(held_out["text"]))]
    cpu_labels = [p["label"] for p in on_cpu.predict(list(held_out["text"]))]
    assert np.mean(np.array(gpu_labels) == held_out["gold"].to_numpy()) > 0.9  # the truth, not the flips
    assert np.mean(np.array(gpu_labels) == np.array(cpu_labels)) >= 0.99


def test_the_tagger_trains_on_the_gpu_and_tags_there(tmp_path):
    from test_tagger import TAGS, toy_ner

    from freeal_ray import load_model
    from freeal_ray.metrics import entity_scores
    from freeal_ray.ner import tag_indices

    rows = toy_ner(240)
    rows["tag_idx"] = tag_indices(rows["tags"], TAGS, [len(t) for t in rows["tokens"]])
    settings = _settings(build_tiny_encoder(tmp_path / "encoder"), TAGS, epochs=6, warmup_epochs=3, lr=5e-3,
                         mixup_weight=0.0, ramp_epochs=1, word_dropout=0.0, head_lr=5e-3)
    metrics = _fit_on_cuda("tokens", rows[["tokens", "tag_idx"]], settings, tmp_path / "tagger")
    assert metrics["robust"] is True

    held_out = toy_ner(100, seed=7)
    model = load_model(tmp_path / "tagger")
    assert next(model.checkpoint.model.parameters()).is_cuda
    predicted = [p["tags"] for p in model.predict([list(t) for t in held_out["tokens"]])]
    assert entity_scores([list(g) for g in held_out["tags"]], predicted)["f1"] > 0.7  # 0.78 on a CPU, 0 untrained
