"""A run's held-out images through an exported model, each as ``hpcmass predict`` treats an observation.

How do models trained on one kind of mock read another (the paper's mocks against realistic ones, one
exposure against a range)? Each image (cluster, projection) of a store, at its own exposure, passes
predict's checks (:func:`hpcmass.predict.cli.checked_image`: exposure, field coverage, cluster) and is
predicted by the model of the cluster's test fold, the one that never saw the cluster; the
out-of-distribution score is that model's (:func:`hpcmass.predict.checks.feature_distance`), the
statistic the export calibrated its threshold on. ``hpcmass compare`` shows each run's models on both
runs' images (:mod:`hpcmass.report.compare`); models on their own run's images reproduce the train
stage's held-out predictions and the export's held-out scores.
"""

from __future__ import annotations

import numpy as np

from ..images import VIEWS_PER_AXIS, make_views
from . import checks
from .calibration import rms
from .cli import checked_image
from .events import Binned


def through_model(bundle, counts, view_ks, folds, truth, exposure=None) -> dict:
    """Images ``counts`` ``(n, axes, bands, P, P)`` observed for ``view_ks`` ``(n, axes)`` [ks], with their
    exposure maps ``(n, axes, P, P)`` (None: none, as predict without ``--expmap``), of clusters in ``folds``
    with true log10 M500c ``truth``, through ``bundle``'s test-fold models: how many each check refuses, and the
    residuals, interval coverage and out-of-distribution warnings (all images, and those no check refuses)."""
    from ..train.model import predict_with_features, with_features

    n, n_axes = counts.shape[:2]
    reference = bundle.feature_reference
    if reference is None:
        raise ValueError(f"{bundle.path}: exported before the out-of-distribution score; export it again")
    central, half, score = (np.full((n, n_axes), np.nan) for _ in range(3))
    refused = {}
    accepted = np.zeros((n, n_axes), dtype=bool)
    images = np.zeros(counts.shape, dtype=np.float32)
    for c, a in np.ndindex(n, n_axes):
        binned = Binned(counts[c, a], (0.0, 0.0), "store", 1e3 * float(view_ks[c, a]),
                        None if exposure is None else exposure[c, a])
        _, images[c, a], verdicts, half[c, a] = checked_image(binned, bundle.domain)
        for v in verdicts:
            if v.verdict == "refuse":
                refused[v.check] = refused.get(v.check, 0) + 1
        accepted[c, a] = checks.worst(verdicts) != "refuse"
    for k, model in enumerate(bundle.models()):
        mine = folds == k
        pred, features = predict_with_features(with_features(model), make_views(images[mine]))
        central[mine] = pred.reshape(-1, n_axes, VIEWS_PER_AXIS).mean(axis=-1)
        score[mine] = checks.feature_distance(features.reshape(-1, n_axes, VIEWS_PER_AXIS, features.shape[-1]),
                                              reference["mean"][k], reference["precision"][k])
    delta = central - np.asarray(truth)[:, None]
    warned = score > bundle.domain["ood"]["warn_above"]

    def summary(mask) -> dict:
        return {"n_images": int(mask.sum()), "median_delta": float(np.median(delta[mask])) if mask.any() else None,
                "rms_delta": rms(delta[mask]),
                "inside": float(np.mean(np.abs(delta[mask]) <= half[mask])) if mask.any() else None,
                "ood_warned": int(np.count_nonzero(warned & mask)),
                "rms_delta_ood_warned": rms(delta[warned & mask]),
                "rms_delta_ood_not_warned": rms(delta[~warned & mask])}

    return {"model": str(bundle.path), "refused": refused, "all": summary(np.ones_like(accepted)),
            "accepted": summary(accepted)}
