"""A prediction's 68% interval, calibrated on the cross-validated (held-out) predictions.

One image gives K fold models × 8 views (:mod:`hpcmass.images`) = 8K predictions of
log10 M500c. The **central value** is their mean; their scatter is reported as the **view spread**
(one model's 8 views, pooled over models: ``sqrt(mean_k var_k)``, ddof=1) and the **fold spread**
(the scatter of the K models' means).

The **interval** is ``central ± h``. Each cluster was unseen by exactly one model, its test fold's;
that model's 8 views of one projection are a held-out image with residual δ = mean − truth. h is
the split-conformal quantile of the held-out |δ| over every fold and view at the nominal level
(the ⌈(n+1)·0.6827⌉-th smallest of n). The **measured coverage** is leave-one-fold-out: h fitted
on the other folds' held-out images, then the fraction of this fold's images whose interval holds
the true mass, pooled over folds — computed, never assumed. The exported h uses every fold.

Why h is not a multiple of the image's own K×8 spread: (1) each cluster is unseen by one model
only, so no held-out image has a K-model spread to calibrate against; (2) one model's view spread
is available for held-out images, but on the demo run it is uncorrelated with |δ| (Spearman
−0.12, 90 images; 0.002–0.007 dex against |δ| ~0.05), so an interval scaled by it varies in width
at random. A single held-out model's error already includes its own model-to-model scatter and
the mean of K models is at least as accurate in the mean square (Jensen), so ``central ± h`` is
calibrated for one model and, if anything, conservative for the ensemble. The spreads still
matter as a check: a fold spread larger than h means the models disagree more than their
held-out errors allow — the image is unlike the training set — and ``hpcmass predict`` says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..images import VIEWS_PER_AXIS

#: The nominal level of the interval: ±1σ of a Gaussian.
NOMINAL = 0.6827


def image_statistics(pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(central, view spread, fold spread) of predictions ``(..., models, views)``; fold spread NaN for one model."""
    pred = np.asarray(pred, dtype=np.float64)
    central = pred.mean(axis=(-2, -1))
    view = np.sqrt(np.var(pred, axis=-1, ddof=1).mean(axis=-1))
    means = pred.mean(axis=-1)
    fold = np.std(means, axis=-1, ddof=1) if means.shape[-1] > 1 else np.full(central.shape, np.nan)
    return central, view, fold


def rms(delta) -> float | None:
    """Root mean square of residuals ``delta`` [dex]; None when there are none."""
    delta = np.asarray(delta, dtype=np.float64)
    return float(np.sqrt(np.mean(delta ** 2))) if delta.size else None


def conformal_quantile(scores, level: float = NOMINAL) -> float:
    """Split-conformal quantile: the ⌈(n+1)·level⌉-th smallest score (the largest when n is too small)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("no held-out images to calibrate on")
    k = math.ceil((scores.size + 1) * level)
    return float(scores[min(k, scores.size) - 1])


@dataclass(frozen=True)
class Calibration:
    level: float  # nominal
    half_width: float  # h [dex], from every fold's held-out images
    coverage: float  # measured, leave-one-fold-out
    covered: int
    n_images: int
    n_clusters: int
    per_fold: list  # [{fold, half_width, covered, n_images}]: the leave-one-fold-out details
    median_delta: float  # held-out bias [dex] (context; not corrected)
    median_view_spread: float  # one held-out model's view spread [dex] (context)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"68% interval = central ± {self.half_width:.3f} dex (held-out |δ| quantile); measured coverage on "
                f"held-out images {100 * self.coverage:.1f}% ({self.covered}/{self.n_images} images of "
                f"{self.n_clusters} clusters, each fold's interval fitted without it)")


@dataclass(frozen=True)
class HeldOut:
    """Per held-out image (cluster, projection): its test model's prediction and out-of-sample interval."""

    cluster: np.ndarray  # (m,) index into the catalog
    axis: np.ndarray  # (m,) projection index
    fold: np.ndarray
    truth: np.ndarray
    central: np.ndarray  # mean of the test model's 8 views
    view_spread: np.ndarray
    half_width: np.ndarray  # h fitted without this image's fold
    covered: np.ndarray  # bool


def calibrate(pred, truth, folds, level: float = NOMINAL, select=None) -> tuple[Calibration, HeldOut]:
    """Calibrate h on held-out predictions ``pred`` ``(n_clusters, n_views)`` (each cluster by its test
    fold's model; views in :mod:`~hpcmass.images` order), true ``truth`` and ``folds``; only on the held-out
    images (cluster, projection) where ``select`` ``(n_clusters, n_axes)`` is true, if given (e.g. those of
    one exposure range)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth, folds = np.asarray(truth, dtype=np.float64), np.asarray(folds)
    n, n_views = pred.shape
    if n_views % VIEWS_PER_AXIS or truth.shape != (n,) or folds.shape != (n,):
        raise ValueError(f"expected pred (n, 8·axes), truth (n,), folds (n,); got {pred.shape}, {truth.shape}, "
                         f"{folds.shape}")
    if not np.isfinite(pred).all():
        raise ValueError("held-out predictions contain NaN: not every fold finished")
    n_axes = n_views // VIEWS_PER_AXIS
    central, spread, _ = image_statistics(pred.reshape(n, n_axes, 1, VIEWS_PER_AXIS))  # (n, n_axes)
    select = np.ones(central.shape, dtype=bool) if select is None else np.asarray(select, dtype=bool)
    if select.shape != central.shape or not select.any():
        raise ValueError(f"select must be (n, axes) = {central.shape} with an image in it, got {select.shape}")
    cluster, axis = (c[select] for c in np.meshgrid(np.arange(n), np.arange(n_axes), indexing="ij"))
    delta, image_fold = central[select] - truth[cluster], folds[cluster]
    half = np.empty_like(delta)
    per_fold = []
    for k in np.unique(image_fold):
        mine = image_fold == k
        half[mine] = conformal_quantile(np.abs(delta[~mine]), level)
        per_fold.append({"fold": int(k), "half_width": float(half[mine][0]),
                         "covered": int((np.abs(delta[mine]) <= half[mine]).sum()), "n_images": int(mine.sum())})
    covered = np.abs(delta) <= half
    cal = Calibration(level=level, half_width=conformal_quantile(np.abs(delta), level), coverage=float(covered.mean()),
                      covered=int(covered.sum()), n_images=int(delta.size), n_clusters=int(np.unique(cluster).size),
                      per_fold=per_fold, median_delta=float(np.median(delta)),
                      median_view_spread=float(np.median(spread[select])))
    held = HeldOut(cluster, axis, image_fold, truth[cluster], central[select], spread[select], half, covered)
    return cal, held


@dataclass(frozen=True)
class Interval:
    central: float
    lower: float
    upper: float
    view_spread: float
    fold_spread: float
    per_fold: list  # each model's mean over the views


def interval(pred, half_width: float) -> Interval:
    """The calibrated interval of one image's predictions ``(models, views)``."""
    pred = np.asarray(pred, dtype=np.float64)
    central, view, fold = (float(v) for v in image_statistics(pred))
    return Interval(central, central - half_width, central + half_width, view, fold, pred.mean(axis=-1).tolist())
