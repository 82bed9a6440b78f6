"""Does an image look like what the models were trained on? Pure statistics of one binned image
``(bands, P, P)``, computed alike on the training images, on blank-sky mocks and on a user's
observation, and the verdicts ``hpcmass predict`` gives with the thresholds that
:mod:`hpcmass.predict.domain` measured when the model was exported.

- **Field coverage**: the fraction of the field's cells (a :data:`CELLS` × :data:`CELLS` grid)
  holding at least one event in any band. Every cell of a training mock holds tens to hundreds of
  background counts (measured on a blank-sky mock of the approximate ACIS-I: 375 per 75" cell in
  0.5-7 keV at 100 ks, 37 per cell of the tests' 10 ks images), so an empty cell lies outside the
  observation's footprint (off the chips, or cut away), not in a dip of the background. Given the
  observation's exposure map, the cells it exposes instead (:data:`COVERED_EXPOSURE`).
- **Extended emission** ("is there a cluster"): the surface brightness in an annulus around the
  centre (:func:`apertures`: 0.5'-3' of the 20' field) above the field's own outskirts (beyond 8'),
  in units of its Poisson error. The annulus is cut into :data:`SECTORS` sectors and their median
  excess taken, so a point source (the X-ray peak of a field without a cluster, inside the
  annulus' hole, or a bright one elsewhere in one sector) does not count as extended emission. The
  outskirts are the local background, so the test does not depend on the absolute background
  level (a real observation's differs from the mocks'); its cells are 3-sigma clipped, so that point
  sources there do not raise it (SOXS's point-source background made the unclipped mean of the
  statistic -1.5 on blank fields). Only cells inside the footprint count, not those on its edge
  (:func:`_inner_cells`): on blank-sky mocks centred on their X-ray peak, the partly covered edge
  cells biased the statistic by +5 sigma on average. Given the observation's exposure map, surface
  brightness is counts over exposure instead, pixel by pixel: ACIS-I's gaps, 50" from the aimpoint,
  cross the annulus in up to four of its sectors, and counted without the exposure they read as
  missing emission (on the realistic demo mocks, the groups below log M500c = 13.7 gain a median
  10 sigma from the correction, 6-26 sigma for 80% of them).
- **Out of distribution**: how far the network's penultimate features (the last hidden layer's 20
  activations) of the image's 8 views lie from those of the training images, as the squared Mahalanobis
  distance of each view from the training views' mean and covariance (:func:`feature_reference`), averaged
  over the 8 views. A cluster image the models read like their training mocks lies inside the training
  features' cloud; one they read differently (a mock of another instrument model, an exposure they were not
  trained at) lies outside it, and so does a cluster beyond the training mass range. Held-out images set
  the warning threshold (:mod:`hpcmass.predict.domain`): the score ranks the image against the scores of
  images no model had seen.
- **Perturbations** used to calibrate the verdicts on held-out images: :func:`thin` (a shorter
  exposure: binomial thinning of counts is exactly the statistics of an observation
  ``fraction`` times as long, background included) and :func:`cut_strip` (a field that stops
  short of one edge).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

#: Cells per side of the grid field coverage is counted on.
CELLS = 16
#: A cell's mean exposure (fraction of the full) from which an exposure map counts it covered. At the mocks' ~390
#: background counts per full cell in 100 ks it expects 2 events, the event footprint's edge; below it lies the
#: leakage of SOXS's FFT-convolved maps (1e-4 to 3e-2 in eventless cells). On the realistic demo mocks the two
#: rules disagree on 0.8% of cells, and on an image's coverage by at most 2.3 points.
COVERED_EXPOSURE = 0.005
#: Sectors of the annulus whose median excess measures extended emission.
SECTORS = 8
#: Annulus and background radii as fractions of the field's side (0.5', 3' and 8' of the paper's 20').
R_IN_FIELD, R_OUT_FIELD, R_BKG_FIELD = 0.025, 0.15, 0.4
#: The annulus' hole is at least this many pixels wide (radius), so a point source's pixels stay out of it.
R_IN_MIN_PIXELS = 1.5


@dataclass(frozen=True)
class Verdict:
    """One domain check's outcome: ``ok``, ``warn`` or ``refuse``, the measured value and why."""

    check: str
    verdict: str
    value: float | None
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _cell_edges(pixels: int) -> np.ndarray:
    return np.linspace(0, pixels, min(CELLS, pixels) + 1).round().astype(int)


def _per_cell(values, pixels: int) -> np.ndarray:
    """``(c, c)`` sums of ``(P, P)`` values over each cell."""
    starts = _cell_edges(pixels)[:-1]
    return np.add.reduceat(np.add.reduceat(values, starts, axis=0), starts, axis=1)


def covered_cells(image, exposure=None) -> np.ndarray:
    """``(c, c)`` bool: the cells of the field holding at least one event in any band or, given an ``exposure``
    map ``(P, P)``, the cells exposed on average at least :data:`COVERED_EXPOSURE` of the full exposure."""
    if exposure is None:
        total = np.asarray(image).sum(axis=0)
        return _per_cell(total, total.shape[-1]) > 0
    exposure = np.asarray(exposure, dtype=np.float64)
    sizes = np.diff(_cell_edges(exposure.shape[-1]))
    return _per_cell(exposure, exposure.shape[-1]) >= COVERED_EXPOSURE * np.outer(sizes, sizes)


def field_coverage(image, exposure=None) -> float:
    """The fraction of the field's cells covered (:func:`covered_cells`; 1.0 for a full field)."""
    return float(covered_cells(image, exposure).mean())


def _inner_cells(image) -> np.ndarray:
    """``(c, c)`` bool: covered cells whose eight neighbours are covered too. A cell on the edge of the footprint
    (or of the field, which a centre off the pointing takes past the detector) may be covered in part only,
    and would bias a surface brightness low."""
    from scipy.ndimage import binary_erosion

    return binary_erosion(covered_cells(image), structure=np.ones((3, 3), bool), border_value=0)


@dataclass(frozen=True)
class Apertures:
    """Radii [pixels] of the annulus (``r_in``-``r_out``) and of the background's inner edge."""

    r_in: float
    r_out: float
    r_bkg: float
    sectors: int = SECTORS

    def as_dict(self) -> dict:
        return asdict(self)


def apertures(pixels: int) -> Apertures:
    """The extended-emission test's radii for a ``pixels``-wide field."""
    return Apertures(max(R_IN_FIELD * pixels, R_IN_MIN_PIXELS), R_OUT_FIELD * pixels, R_BKG_FIELD * pixels)


def extended_significance(image, ap: Apertures, exposure=None) -> float:
    """Median sector excess of the annulus over the outskirts, times the annulus area, over its Poisson error;
    NaN when the annulus or the outskirts hold no pixel to measure. The outskirts' level is the mean of their
    whole cells after 3-sigma clipping, so that point sources there do not raise it.

    Surface brightness is counts over exposure. Without an ``exposure`` map ``(P, P)`` (fractions of the full
    exposure), the exposure is taken as full in the inner cells (:func:`_inner_cells`) and nil elsewhere; with
    one, pixels count as far as they were on the detector, so that chip gaps and a dithered edge do not dilute
    the emission (and the outskirts' cells need half the best-exposed cell's exposure). The statistic does not
    change when the whole map is scaled."""
    from astropy.stats import sigma_clip

    total = np.asarray(image, dtype=np.float64).sum(axis=0)
    p = total.shape[-1]
    sizes = np.diff(_cell_edges(p))
    cell_area = np.outer(sizes, sizes)
    if exposure is None:
        weight = np.repeat(np.repeat(_inner_cells(image), sizes, axis=0), sizes, axis=1).astype(np.float64)
    else:
        weight = np.asarray(exposure, dtype=np.float64)
    on = weight > 0
    c = np.arange(p) - (p - 1) / 2.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    ann = on & (r >= ap.r_in) & (r < ap.r_out)
    cell_weight = _per_cell(weight, p)
    well_exposed = cell_weight >= 0.5 * (cell_weight / cell_area).max() * cell_area
    outskirts = well_exposed & (_per_cell((r >= ap.r_bkg).astype(int), p) == cell_area)
    if not ann.any() or not outskirts.any():
        return math.nan
    counts, exposed = _per_cell(np.where(on, total, 0.0), p)[outskirts], cell_weight[outskirts]
    kept = ~np.ma.getmaskarray(sigma_clip(counts / exposed, sigma=3.0, maxiters=None))
    n_bkg, n_ann = float(exposed[kept].sum()), float(weight[ann].sum())
    # At least one count over the background area: an empty background still has an error.
    rate = max(counts[kept].sum(), 1.0) / n_bkg
    sector = (np.floor((theta + np.pi) / (2 * np.pi) * ap.sectors).astype(int)) % ap.sectors
    density = [total[ann & (sector == s)].sum() / weight[ann & (sector == s)].sum()
               for s in range(ap.sectors) if (ann & (sector == s)).any()]
    excess = (np.median(density) - rate) * n_ann
    # The annulus' own Poisson noise and that of the background estimate scaled to its area.
    return float(excess / math.sqrt(rate * n_ann * (1.0 + n_ann / n_bkg)))


#: Ridge added to the training features' covariance, a fraction of their mean variance: it keeps the covariance
#: invertible where units are dead (no training view activates them), at a large weight for an image that does.
FEATURE_RIDGE = 1e-3


def feature_reference(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and precision ``(d, d)`` (inverse covariance with :data:`FEATURE_RIDGE`) of training
    features ``(m, d)``."""
    features = np.asarray(features, dtype=np.float64)
    cov = np.atleast_2d(np.cov(features, rowvar=False))
    cov += FEATURE_RIDGE * max(float(np.trace(cov)) / cov.shape[0], np.finfo(float).tiny) * np.eye(cov.shape[0])
    return features.mean(axis=0), np.linalg.inv(cov)


def feature_distance(features, mean, precision) -> np.ndarray:
    """Squared Mahalanobis distance of views' features ``(..., views, d)`` from a reference, averaged over the
    views: ``(...)``."""
    z = np.asarray(features, dtype=np.float64) - mean
    return np.einsum("...i,ij,...j->...", z, precision, z).mean(axis=-1)


def thin(images, fraction: float, rng) -> np.ndarray:
    """Counts of an exposure ``fraction`` (<= 1) times as long: each count kept with that probability."""
    return rng.binomial(np.asarray(images), fraction).astype(np.int32)


def cut_strip(images, fraction: float) -> np.ndarray:
    """Images ``(..., P, P)`` with the first ``fraction`` of their rows emptied: a field short of one edge."""
    out = np.array(images, copy=True)
    out[..., : round(fraction * out.shape[-2]), :] = 0
    return out


class ExposureCorrection(NamedTuple):
    """The exposure check's verdict and what it does to the image: the fraction of its counts to keep (a longer
    exposure thinned), the exposure [ks] of the kept counts to scale to the training reference (None: the
    models take counts unscaled) and the interval's half-width [dex]."""

    verdict: Verdict
    keep: float
    scale_from_ks: float | None
    half_width: float


def exposure_verdict(exposure_s: float, domain: dict) -> ExposureCorrection:
    """The exposure check of an observation ``exposure_s`` long. Models of one training exposure: a longer
    observation is thinned to it, a shorter one's interval widened as calibrated (down to its smallest fraction).
    Models trained on a range of exposures: a longer observation is thinned to the longest, the counts scaled to
    the reference exposure as the training images were, the interval that of held-out images of like exposure;
    a shorter one than the range is refused."""
    cal, train_s = domain["exposure"], 1e3 * domain["exposure"]["training_ks"]
    span = cal.get("range_ks")  # models exported before ranges existed have none
    if exposure_s <= 0:
        return ExposureCorrection(Verdict("exposure", "warn", None, "no EXPOSURE in the file: not checked, not "
                                                                    "corrected"), 1.0, None, half_width_at(1.0, domain))
    f = exposure_s / train_s
    if span is None:
        text = f"{exposure_s / 1e3:.4g} ks, trained on {train_s / 1e3:.4g} ks"
        longest_s = train_s
    else:
        text = f"{exposure_s / 1e3:.4g} ks, trained on {span[0]:g}-{span[1]:g} ks"
        longest_s = 1e3 * span[1]
    if f < cal["min_fraction"]:
        why = ("shorter than any training observation" if span is not None else
               f"{f:.2f} of it, and the interval is calibrated down to {cal['min_fraction']:.2f}")
        return ExposureCorrection(Verdict("exposure", "refuse", f, f"{text}: {why}"), 1.0, None,
                                  half_width_at(1.0, domain))
    keep, seen_s = min(1.0, longest_s / exposure_s), min(exposure_s, longest_s)
    h = half_width_at(seen_s / train_s, domain)
    if keep < 1.0:
        text += f": thinned to {longest_s / 1e3:g} ks (each count kept with probability {keep:.4f})"
    if span is not None:
        text += (f"{';' if keep < 1.0 else ':'} counts scaled to {train_s / 1e3:g} ks as the training images, "
                 f"interval ±{h:.3f} dex (held-out images of like exposure)")
    elif f < 1.0:
        text += f": interval widened to ±{h:.3f} dex (held-out images thinned alike)"
    return ExposureCorrection(Verdict("exposure", "ok", f, text), keep, None if span is None else seen_s / 1e3, h)


def half_width_at(fraction: float, domain: dict) -> float:
    """The interval's half-width [dex] for an exposure ``fraction`` of the training one, interpolated between
    the held-out calibrations at the measured fractions (the full exposure's above 1)."""
    levels = sorted(domain["exposure"]["levels"], key=lambda lv: lv["fraction"])
    f = [lv["fraction"] for lv in levels]
    h = [lv["half_width"] for lv in levels]
    return float(np.interp(fraction, f, h))  # held at the end levels beyond them


def coverage_verdict(coverage: float, domain: dict, exposure_map: bool = False) -> Verdict:
    cal = domain["coverage"]
    text = f"{100 * coverage:.0f}% of the field's cells {'exposed' if exposure_map else 'hold events'}"
    if coverage < cal["refuse_below"]:
        return Verdict("coverage", "refuse", coverage, f"{text}; below {100 * cal['refuse_below']:.0f}% the held-out "
                                                       f"interval's coverage drops by more than "
                                                       f"{100 * cal['max_coverage_drop']:.0f} points")
    if coverage < cal["training_min"]:
        return Verdict("coverage", "warn", coverage, f"{text}, less than any training image "
                                                     f"({100 * cal['training_min']:.0f}%)")
    return Verdict("coverage", "ok", coverage, text)


def detection_for(domain: dict, exposure_map: bool) -> dict | None:
    """The detection threshold's calibration for the statistic with an exposure map or without; None with one
    for a model exported before the statistic was calibrated with exposure maps."""
    detection = domain["detection"]
    return detection.get("exposure_map") if exposure_map else detection


def cluster_verdict(significance: float, detection: dict, exposure_map: bool = False) -> Verdict:
    """The extended-emission check against ``detection`` (:func:`detection_for`)."""
    threshold = detection["threshold_sigma"]
    if not math.isfinite(significance):
        return Verdict("cluster", "refuse", None, "no cluster detected: the annulus or the outskirts the background is "
                                                  "measured in hold no events")
    text = (f"extended emission at {significance:.1f} (threshold {threshold:.1f}, from blank-sky mocks"
            f"{'; exposure-corrected' if exposure_map else ''})")
    if significance < threshold:
        return Verdict("cluster", "refuse", significance, f"no cluster detected: {text}")
    return Verdict("cluster", "ok", significance, text)


def ood_verdict(score: float | None, domain: dict, heldout_scores=None) -> Verdict:
    """The out-of-distribution check of an image's score (the median over the fold models of
    :func:`feature_distance`), against the held-out images' ``heldout_scores``. A warning only: how much a
    prediction beyond the threshold is off depends on what differs, which no held-out mock measures."""
    cal = domain.get("ood")  # models exported before the check existed have none
    if cal is None or score is None:
        return Verdict("ood", "warn", None, "not checked: the model was exported before this check existed; "
                                            "export it again with `hpcmass export-model`")
    rank = 100 * float(np.mean(np.asarray(heldout_scores) < score))
    text = (f"penultimate features at {score:.3g} from the training images' (farther than {rank:.0f}% of held-out "
            f"mocks; warned above {cal['warn_above']:.3g}, their {100 * cal['level']:.0f}% quantile)")
    if score > cal["warn_above"]:
        return Verdict("ood", "warn", score, f"unlike the training images: {text}; the mass may be biased beyond "
                                             f"the interval")
    return Verdict("ood", "ok", score, text)


def worst(verdicts) -> str:
    """The row's verdict: the worst of its checks'."""
    order = ("ok", "warn", "refuse")
    return max((v.verdict for v in verdicts), key=order.index, default="ok")
