"""train-r: the SLM fitted on round r - 1's labels with Ray Train (robust training: a GMM on
per-row losses inside training weighs clean rows, consistency between two views and mixup
teach from the rest; training.py). Incremental mode adds about as many unannotated rows as
annotated ones, for the consistency loss alone."""

from __future__ import annotations

import shutil

from freeal_ray import tables
from freeal_ray.model_store import resolve_encoder
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.ray_cluster import want_gpu
from freeal_ray.training import TrainSettings, train_slm
from freeal_ray.training.settings import with_min_steps


class Train(Stage):
    name = "train-{r}"
    inputs = ("round-{prev}/labels",)
    outputs = ("round-{r}/slm",)

    def run(self, ctx: RunContext, info: dict) -> None:
        r, s = self.r, ctx.cfg.slm
        rows = ctx.table(f"round-{r - 1}", "labels").map_batches(ctx.kind.training_rows, batch_format="pandas")
        total = tables.count_rows(ctx.path(f"round-{r - 1}", "labels"))
        unlabelled = _unlabelled_sample(ctx, r) if ctx.incremental else None
        if unlabelled is not None:
            rows = rows.union(unlabelled.map_batches(ctx.kind.training_rows, batch_format="pandas"))
            total += tables.count_rows(ctx.path(f"round-{r}", "unlabelled"))
        settings = with_min_steps(ctx.kind.train_settings(train_settings(ctx, r)), total, s.num_workers, s.min_steps)
        result = train_slm(rows, settings, str(ctx.path(f"round-{r}", "slm")), s.num_workers, want_gpu(s.use_gpu),
                           objective=ctx.kind.objective, desc=f"SLM training, round {r}", total_rows=total)
        info.update({k: result[k] for k in ("train_loss", "clean_fraction") if k in result}, epochs=settings.epochs)


def train_settings(ctx: RunContext, r: int) -> TrainSettings:
    return slm_settings(ctx.cfg.slm, tuple(ctx.kind.slm_classes()), ctx.cfg.loop.seed + r)


def slm_settings(s, labels: tuple[str, ...], seed: int) -> TrainSettings:
    """One fit's settings from the config's `slm` section (before the step floor, which needs the row count)."""
    return TrainSettings(
        encoder_path=str(resolve_encoder(s.model)), labels=labels,
        max_length=s.max_length, epochs=s.epochs, warmup_epochs=s.warmup_epochs, batch_size=s.batch_size, lr=s.lr,
        gmm_threshold=s.gmm_threshold, mixup_alpha=s.mixup_alpha, mixup_weight=s.mixup_weight,
        consistency_weight=s.consistency_weight, ramp_epochs=s.ramp_epochs, word_dropout=s.word_dropout,
        noisy_rows=s.noisy_rows, seed=seed, head_lr=s.head_lr, label_floor=s.label_floor,
    )


def _unlabelled_sample(ctx: RunContext, r: int):
    """About as many rows round r - 1 left unannotated as it annotated. Written once: Ray Train
    re-reads its dataset every epoch, and the anti-join is the dear part."""
    folder = ctx.path(f"round-{r}", "unlabelled")
    if not folder.exists():
        n_labelled = tables.count_rows(ctx.path(f"round-{r - 1}", "labels"))
        share = min(1.0, n_labelled / max(ctx.n_rows() - n_labelled, 1))
        rest = ctx.unannotated(r - 1)
        if share < 1.0:
            rest = rest.random_sample(share, seed=ctx.cfg.loop.seed + r)
        partial = folder.with_name("unlabelled.partial")
        shutil.rmtree(partial, ignore_errors=True)
        tables.write_table(rest.select_columns([c for c in ("id", "text", "view") if c in rest.columns()]), partial)
        partial.mkdir(parents=True, exist_ok=True)  # an empty sample is still a finished one
        partial.rename(folder)
    return tables.read_table(folder)
