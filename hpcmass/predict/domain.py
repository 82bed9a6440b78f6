"""The domain checks' thresholds, measured when a model is exported (the statistics: :mod:`hpcmass.predict.checks`).

- **Is there a cluster**: :data:`BLANK_FIELDS` blank-sky mocks through the observe stage's own
  instrument and backgrounds (:func:`hpcmass.observe.simulate.sky_field`), each binned as
  ``hpcmass predict`` bins a file (centred on its X-ray peak). The first half sets the threshold
  (their mean extended-emission significance + :data:`DETECTION_SIGMAS` standard deviations); the
  second half, not used for it, gives the false-positive rate with its one-sided 95% upper limit
  (Clopper-Pearson). The completeness is the fraction of training images (every cluster and
  projection) above the threshold. Mocks made without point sources (the paper's) get a further
  half as many blank fields with SOXS's point-source background, for the threshold's
  false-positive rate on a sky like the real one. The exposure-corrected statistic, which
  ``predict --expmap`` uses, gets its own threshold (``detection.exposure_map``) from the same fields,
  each read with its SOXS exposure map as predict reads an observation's, and its completeness from
  the training images with the store's exposure maps (the paper's mocks, all pointed alike, with that
  of one such view: their one chip is 19.7' wide, not quite the 20' field).
- **Field coverage**: the held-out images with a strip of the field emptied (:data:`STRIP_FRACTIONS`
  of its side; the 8 views put it on every side) are predicted by their test fold's model. The
  largest strip whose held-out interval coverage stays within :data:`MAX_COVERAGE_DROP` of the
  unperturbed one sets the refusal threshold: the median field coverage of images cut that far
  (never above the least coverage of a training image).
- **Exposure**: the held-out images thinned to :data:`EXPOSURE_FRACTIONS` of the exposure (exact
  Poisson statistics of a shorter observation) are predicted and calibrated as the full ones
  (:func:`hpcmass.predict.calibration.calibrate`): predict widens the interval to the half-width at
  the observation's fraction, and refuses below the smallest fraction measured. Models trained on a
  range of exposures (``observe.exposure_range_ks``) need no thinning: their held-out images already
  span it, and are calibrated in :data:`EXPOSURE_BINS` bins of their own exposure (equal numbers of
  images); predict interpolates the half-width between the bins' median exposures and refuses outside
  the range.
- **Out of distribution**: each fold model's penultimate features of the views of its training images
  are the reference (their mean and covariance); the held-out images, scored by their test fold's
  model alone (:func:`feature_calibration`), set the warning threshold: their split-conformal
  :data:`OOD_LEVEL` quantile, so that an image like the training mocks is warned with probability
  at most 1 - :data:`OOD_LEVEL`. The false-alarm rate is measured leave-one-fold-out, as the interval's
  coverage. Predict scores an image by the median over the fold models, none of which saw it.

Everything random is seeded from the run's seed; the same store exports the same thresholds.
"""

from __future__ import annotations

import numpy as np

from ..images import VIEWS_PER_AXIS, make_views
from ..seeding import int_seed, rng
from . import checks
from .calibration import calibrate, conformal_quantile, rms

#: The model directory's file of the out-of-distribution score's reference (:func:`feature_calibration`).
FEATURES_FILE = "features.npz"
#: Blank-sky mocks made per export: half set the detection threshold, half measure its false-positive rate.
BLANK_FIELDS = 100
#: The detection threshold: the calibration blank fields' mean significance plus this many standard deviations.
DETECTION_SIGMAS = 5.0
#: Exposure fractions the interval is calibrated at (held-out images thinned).
EXPOSURE_FRACTIONS = (0.8, 0.6, 0.4, 0.25)
#: Bins of exposure the held-out images of a model trained on a range of exposures are calibrated in.
EXPOSURE_BINS = 3
#: Widths of the emptied strip (fractions of the field's side) the coverage threshold is measured at.
STRIP_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)
#: The most the held-out interval's coverage may drop (as a fraction) for an image to be accepted.
MAX_COVERAGE_DROP = 0.05
#: The held-out images' quantile of the out-of-distribution score above which an image is warned.
OOD_LEVEL = 0.95


def blank_sky_images(workdir, params, n: int, log=None, key: str = "blank-sky"):
    """``(n, bands, P, P)``: blank-sky mocks of the observe stage's instrument and backgrounds (``params.observe``),
    binned as predict bins a file, field i seeded by (run seed, ``key``, i); ``(n, P, P)``: the fraction of the
    exposure each pixel was on the detector, from the mock's SOXS exposure map read as ``predict --expmap`` reads
    one (centred on the X-ray peak, the field may run past the detector); and for the paper's mocks, whose every
    view is pointed alike, the exposure image of such a view (:func:`~hpcmass.observe.simulate.map_exposure_image`,
    None otherwise: the store holds each view's)."""
    from ..observe.simulate import map_exposure_image, write_exposure_map
    from ..observe.stage import blank_sky_fields
    from .events import bin_event_file

    p = params.observe
    out = np.zeros((n, len(p.bands), p.image_pixels, p.image_pixels), dtype=np.int32)
    exposure = np.ones((n, p.image_pixels, p.image_pixels), dtype=np.float32)
    pointed = None
    seeds = [int_seed(params.run.seed, key, i) for i in range(n)]
    for i, (setup, evt, _) in enumerate(blank_sky_fields(workdir, params, seeds, log)):
        if evt is not None:  # else no event at all: an empty image
            expmap = write_exposure_map(evt, p)
            b = bin_event_file(evt, fov_arcmin=p.fov_arcmin, pixels=p.image_pixels, bands=p.bands, expmap=expmap)
            out[i], exposure[i] = b.image, b.exposure
            if pointed is None and p.full_field:
                pointed = map_exposure_image(expmap, p, setup.data.arf)
    return out, exposure, pointed


def significances(images, ap: checks.Apertures, exposure=None) -> np.ndarray:
    """The extended-emission significance of each image ``(n, bands, P, P)``, with its exposure map
    ``(n, P, P)`` when given."""
    if exposure is None:
        return np.array([checks.extended_significance(im, ap) for im in images])
    return np.array([checks.extended_significance(im, ap, e) for im, e in zip(images, exposure)])


def heldout_predictions(models, counts, folds) -> np.ndarray:
    """``(n, 8·axes)`` log10 M500c of each cluster's images ``counts`` ``(n, axes, bands, P, P)`` by its test
    fold's model (``models[k]``), in the store's view order."""
    from ..train.model import predict_log_m500c

    pred = np.full((counts.shape[0], VIEWS_PER_AXIS * counts.shape[1]), np.nan)
    for k, model in enumerate(models):
        mine = folds == k
        pred[mine] = predict_log_m500c(model, make_views(counts[mine]))
    return pred


def feature_calibration(models, images, folds, pred, truth) -> tuple[dict, dict]:
    """The out-of-distribution score's reference and warning threshold, from images ``(n, axes, bands, P, P)``
    as the models take them: the ``domain.ood`` block of model.json and the arrays predict reads (each fold
    model's training-feature ``mean`` ``(K, d)`` and ``precision`` ``(K, d, d)``, and the held-out images'
    scores ``(n, axes)``). ``pred`` ``(n, 8·axes)`` and ``truth``: the held-out predictions, to measure how far
    off the warned images are."""
    from ..train.model import predict_with_features, with_features

    n, n_axes = images.shape[:2]
    views = make_views(images)  # every model sees every image: its training ones are its reference
    held = np.full((n, n_axes), np.nan)
    means, precisions = [], []
    for k, model in enumerate(models):
        _, features = predict_with_features(with_features(model), views)
        features = features.reshape(n, n_axes, VIEWS_PER_AXIS, -1)
        mean, precision = checks.feature_reference(features[folds != k].reshape(-1, features.shape[-1]))
        held[folds == k] = checks.feature_distance(features[folds == k], mean, precision)
        means.append(mean)
        precisions.append(precision)
    threshold = conformal_quantile(held, OOD_LEVEL)
    image_fold = np.broadcast_to(folds[:, None], held.shape)
    alarms = sum(int(np.count_nonzero(held[image_fold == k] > conformal_quantile(held[image_fold != k], OOD_LEVEL)))
                 for k in np.unique(folds))
    warned = held > threshold
    delta = pred.reshape(n, n_axes, VIEWS_PER_AXIS).mean(axis=-1) - np.asarray(truth)[:, None]
    block = {"features": f"the fold model's last hidden layer ({means[0].size} units) on the image's "
                         f"{VIEWS_PER_AXIS} views",
             "score": "squared Mahalanobis distance from the model's training views' features (covariance + "
                      f"{checks.FEATURE_RIDGE:g} of its mean variance), averaged over the views; predict: the median "
                      "over the fold models",
             "level": OOD_LEVEL, "warn_above": threshold, "rule": f"the held-out images' split-conformal "
             f"{OOD_LEVEL:g} quantile (each scored by its test fold's model)",
             "heldout": {"n_images": int(held.size), "median": float(np.median(held)), "max": float(held.max()),
                         "false_alarms": alarms, "false_alarm_rate": alarms / held.size,
                         "false_alarm_rule": "threshold from the other folds' held-out images",
                         "rms_delta_warned": rms(delta[warned]), "rms_delta_not_warned": rms(delta[~warned]),
                         "n_warned": int(warned.sum())},
             "file": FEATURES_FILE}
    return block, {"mean": np.array(means), "precision": np.array(precisions), "heldout_scores": held}


def _upper_limit(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper limit of a rate with ``k`` events in ``n`` trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


def _false_positives(sig: np.ndarray, threshold: float) -> dict:
    false = int(np.count_nonzero(~(sig < threshold)))  # NaN (nothing measurable) counts against the test
    return {"false_positives": false, "n_test": int(sig.size), "false_positive_rate": false / sig.size,
            "false_positive_rate_upper95": _upper_limit(false, sig.size)}


def _detection(blank_sig: np.ndarray, train_sig: np.ndarray, point_sources: bool) -> dict:
    calib, test = blank_sig[: blank_sig.size // 2], blank_sig[blank_sig.size // 2:]
    threshold = float(np.nanmean(calib) + DETECTION_SIGMAS * np.nanstd(calib, ddof=1))
    return {
        "threshold_sigma": threshold, "rule": f"mean + {DETECTION_SIGMAS:g} sd of the calibration blank fields' "
                                              f"significance",
        "blank_fields": {"n_calibration": int(calib.size), "point_sources": point_sources,
                         "mean": float(np.nanmean(calib)), "sd": float(np.nanstd(calib, ddof=1)),
                         "max": float(np.nanmax(blank_sig))},
        **_false_positives(test, threshold),
        "completeness": float(np.mean(train_sig >= threshold)), "n_training_images": int(train_sig.size),
        "training_min_sigma": float(np.nanmin(train_sig)),
    }


def _level(cal, held, full) -> dict:
    """One perturbation level's held-out calibration, and its coverage at the unperturbed half-width."""
    return {"half_width": cal.half_width, "coverage": cal.coverage, "median_delta": cal.median_delta,
            "n_images": cal.n_images,
            "coverage_at_full_width": float(np.mean(np.abs(held.central - held.truth) <= full.half_width))}


def exposure_bins(pred, truth, folds, view_ks, reference_ks: float, full) -> list[dict]:
    """The held-out calibration in :data:`EXPOSURE_BINS` bins of the held-out images' exposures ``view_ks``
    ``(n, axes)``, each level at its images' median exposure as a ``fraction`` of ``reference_ks`` (``full``:
    the calibration of them all)."""
    edges = np.quantile(view_ks, np.linspace(0.0, 1.0, EXPOSURE_BINS + 1))
    which = np.clip(np.searchsorted(edges, view_ks, side="right") - 1, 0, EXPOSURE_BINS - 1)
    levels = []
    for b in range(EXPOSURE_BINS):
        cal, held = calibrate(pred, truth, folds, select=which == b)
        levels.append({"fraction": float(np.median(view_ks[which == b])) / reference_ks,
                       "exposure_ks": [float(edges[b]), float(edges[b + 1])], **_level(cal, held, full)})
    return levels


def calibrate_domain(workdir, params, observations, truth, folds, pred, models, blank_fields: int = BLANK_FIELDS,
                     log=None) -> tuple[dict, dict]:
    """The ``domain`` block of model.json (thresholds and what they were measured on) and the arrays of
    :data:`FEATURES_FILE`. ``observations`` are the store's (:class:`~hpcmass.store.readers.Observations`),
    ``pred`` its held-out predictions ``(n, views)``, ``models`` the fold models."""
    p, seed = params.observe, params.run.seed
    counts, images = observations.counts, observations.network_input
    flat = counts.reshape(-1, *counts.shape[2:])
    ap = checks.apertures(counts.shape[-1])
    train_cov = np.array([checks.field_coverage(im) for im in flat])
    train_sig = significances(flat, ap)
    if log:
        log.info("domain checks: %d blank-sky mocks for the detection threshold%s", blank_fields,
                 "" if p.point_sources else f", {blank_fields // 2} more with point sources")
    blank, blank_exposure, pointed = blank_sky_images(workdir, params, blank_fields, log)
    detection = {"apertures_pixels": ap.as_dict(), **_detection(significances(blank, ap), train_sig, p.point_sources)}
    # The training images' exposure maps, as predict --expmap reads an observation's.
    flat_exposure = (observations.exposure.reshape(-1, *flat.shape[2:]) if observations.exposure is not None else
                     np.broadcast_to(np.ones(flat.shape[2:], np.float32) if pointed is None else pointed,
                                     (flat.shape[0], *flat.shape[2:])))
    train_cov_exposed = np.array([checks.field_coverage(im, e) for im, e in zip(flat, flat_exposure)])
    train_sig_exposed = significances(flat, ap, flat_exposure)
    exposed = detection["exposure_map"] = {"statistic": "counts over exposure, pixel by pixel (predict --expmap)",
                                           **_detection(significances(blank, ap, blank_exposure), train_sig_exposed,
                                                        p.point_sources)}
    if not p.point_sources:
        # A real sky has point sources even where the mocks have none: the same threshold's rate on such fields.
        with_ps = params.model_copy(update={"observe": p.model_copy(update={"point_sources": True})})
        ps, ps_exposure, _ = blank_sky_images(workdir, with_ps, blank_fields // 2, log, key="blank-sky-point-sources")
        detection["with_point_sources"] = _false_positives(significances(ps, ap), detection["threshold_sigma"])
        exposed["with_point_sources"] = _false_positives(significances(ps, ap, ps_exposure), exposed["threshold_sigma"])

    ranged = observations.view_exposure_ks is not None
    if log:
        log.info("domain checks: held-out predictions of %scut images (%s%d levels)", "" if ranged else "thinned and ",
                 "" if ranged else f"{len(EXPOSURE_FRACTIONS)} + ", len(STRIP_FRACTIONS))
    full_cal, full = calibrate(pred, truth, folds)

    def level(perturbed) -> dict:
        return _level(*calibrate(heldout_predictions(models, perturbed, folds), truth, folds), full_cal)

    if ranged:
        levels = exposure_bins(pred, truth, folds, observations.view_exposure_ks, p.exposure_ks, full_cal)
        exposure = {"training_ks": p.exposure_ks, "range_ks": list(p.exposure_range_ks),
                    "min_fraction": p.exposure_range_ks[0] / p.exposure_ks, "levels": levels}
    else:
        levels = [{"fraction": 1.0, **_level(full_cal, full, full_cal), "coverage_at_full_width": full_cal.coverage}]
        levels += [{"fraction": f, **level(checks.thin(counts, f, rng(seed, "domain", "thin", f)))}
                   for f in EXPOSURE_FRACTIONS]
        exposure = {"training_ks": p.exposure_ks, "min_fraction": min(EXPOSURE_FRACTIONS), "levels": levels}
    strips = []
    for g in STRIP_FRACTIONS:
        cut = checks.cut_strip(images, g)
        strips.append({"strip": g, "median_field_coverage": float(np.median(
            [checks.field_coverage(im) for im in cut.reshape(-1, *cut.shape[2:])])), **level(cut)})
    # The widest strip up to which every narrower one kept the coverage.
    kept = None
    for s in strips:
        if s["coverage_at_full_width"] < full_cal.coverage - MAX_COVERAGE_DROP:
            break
        kept = s
    training_min = float(train_cov.min())
    refuse_below = training_min if kept is None else min(training_min, kept["median_field_coverage"])
    coverage = {"cells": int(checks.covered_cells(flat[0]).shape[0]), "training_min": training_min,
                "training_median": float(np.median(train_cov)), "refuse_below": refuse_below,
                "max_coverage_drop": MAX_COVERAGE_DROP, "strips": strips}
    accepted = (train_cov >= refuse_below) & (train_sig >= detection["threshold_sigma"])
    accepted_exposed = (train_cov_exposed >= refuse_below) & (train_sig_exposed >= exposed["threshold_sigma"])
    if log:
        log.info("domain checks: penultimate features of every image by every fold model")
    ood, features = feature_calibration(models, images, folds, pred, truth)
    return {
        "seeds": {"run_seed": seed, "blank_sky": "int_seed(run_seed, 'blank-sky', i)",
                  "blank_sky_point_sources": "int_seed(run_seed, 'blank-sky-point-sources', i)",
                  "thinning": "rng(run_seed, 'domain', 'thin', fraction)"},
        "detection": detection, "coverage": coverage,
        "exposure": exposure, "ood": ood,
        "heldout_accepted": {"images": int(accepted.sum()), "of": int(accepted.size),
                             "coverage": float(full.covered[accepted].mean()) if accepted.any() else None,
                             "coverage_all": full_cal.coverage,
                             "exposure_map": {"images": int(accepted_exposed.sum()),
                                              "coverage": (float(full.covered[accepted_exposed].mean())
                                                           if accepted_exposed.any() else None)}},
    }, features
