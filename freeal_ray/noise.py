"""Telling clean labels from noisy ones by their training loss. Plain arrays in, plain arrays out.

Rows whose given label is wrong are learned late, so their loss stays high; a two-component
Gaussian mixture on per-row losses separates the low-loss (clean) mode from the high-loss one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossGMM:
    """A fitted two-component mixture over min-max-normalised losses (small: ships to workers)."""

    means: tuple[float, float]
    variances: tuple[float, float]
    weights: tuple[float, float]
    lo: float
    hi: float

    def p_clean(self, losses) -> np.ndarray:
        """P(row belongs to the low-loss component)."""
        x = _normalise(np.asarray(losses, dtype=np.float64), self.lo, self.hi)[:, None]
        means, var, w = (np.asarray(v)[None, :] for v in (self.means, self.variances, self.weights))
        log_pdf = -0.5 * (np.log(2 * np.pi * var) + (x - means) ** 2 / var) + np.log(w)
        log_pdf -= log_pdf.max(axis=1, keepdims=True)
        post = np.exp(log_pdf)
        post /= post.sum(axis=1, keepdims=True)
        return post[:, int(np.argmin(self.means))]


def _normalise(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - lo) / max(hi - lo, 1e-12)


def fit_loss_gmm(losses, max_samples: int = 200_000, seed: int = 0) -> LossGMM:
    """Fit the mixture on (a capped sample of) per-row losses."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) > max_samples:
        x = np.random.default_rng(seed).choice(x, max_samples, replace=False)
    lo, hi = float(x.min()), float(x.max())
    gmm = GaussianMixture(n_components=2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(_normalise(x, lo, hi)[:, None])
    return LossGMM(
        means=tuple(float(m) for m in gmm.means_.ravel()),
        variances=tuple(float(v) for v in gmm.covariances_.ravel()),
        weights=tuple(float(w) for w in gmm.weights_.ravel()),
        lo=lo,
        hi=hi,
    )


def split_clean_noisy(losses, threshold: float = 0.7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(p_clean, clean mask) for per-row losses; the functional core of the robust training."""
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) < 2 or np.ptp(losses) == 0:
        p = np.ones(len(losses))
        return p, p > threshold
    p = fit_loss_gmm(losses, seed=seed).p_clean(losses)
    return p, p > threshold


def ramp(epoch: int, warmup_epochs: int, ramp_epochs: int) -> float:
    """0 during warm-up, then linear up to 1 over `ramp_epochs` epochs."""
    if epoch < warmup_epochs:
        return 0.0
    return min(1.0, (epoch - warmup_epochs + 1) / max(ramp_epochs, 1))
