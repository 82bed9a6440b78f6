"""The core-excised L_X baseline: aperture photometry on the mock images and a power-law L_X-M fit.

Counts in the annulus inner-outer x R500c (0.15-1 in the paper) about the image centre, minus the
expected background, are converted to a luminosity with one band-averaged counts-to-flux factor
and the luminosity distance. Where the annulus runs off the image, a beta model fitted to the
image beyond the inner radius supplies the missing counts. A power law log M = a + b (log L - pivot)
fitted to each fold's training clusters predicts its test clusters.

The paper's "outer aperture with a 3% / 5% error with R500" can be read two ways, so both are
measured (:func:`aperture_variants`): a Gaussian error of that fraction on the outer radius alone,
or on R500c itself, which moves the whole aperture as an observer's R500c estimate would. A third,
truth-free variant needs no R500c at all: each test cluster's aperture is iterated from the mass its
own L_X gives through its fold's relation (:func:`iterate_mass`), as an observer without a mass would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..constants import KEV_ERG
from ..images import pixel_radius



def disc_fraction(pixels: int, radius_pix: float, subsample: int = 16) -> np.ndarray:
    """(P, P) fraction of each pixel's area inside a circle of ``radius_pix`` about the image centre.

    Pixels wholly inside or outside are 1 or 0; only those the circle crosses are subsampled.
    """
    c = (pixels - 1) / 2.0
    yy, xx = np.mgrid[:pixels, :pixels]
    dx, dy = np.abs(xx - c), np.abs(yy - c)
    near = np.hypot(np.maximum(dx - 0.5, 0), np.maximum(dy - 0.5, 0))
    far = np.hypot(dx + 0.5, dy + 0.5)
    frac = (far <= radius_pix).astype(np.float64)
    edge = np.flatnonzero(((near < radius_pix) & (far > radius_pix)).ravel())
    if edge.size:
        s = (np.arange(subsample) + 0.5) / subsample - 0.5
        sx, sy = np.meshgrid(s, s)
        ex = xx.ravel()[edge][:, None] + sx.ravel() - c
        ey = yy.ravel()[edge][:, None] + sy.ravel() - c
        frac.ravel()[edge] = (np.hypot(ex, ey) <= radius_pix).mean(axis=1)
    return frac


def beta_counts(r, s0: float, rc: float, beta: float):
    """Counts within projected radius r of the beta model S(R) = s0 (1 + (R/rc)^2)^(1/2 - 3 beta)."""
    e = 1.5 - 3.0 * beta
    x = 1.0 + (np.asarray(r, dtype=np.float64) / rc) ** 2
    # e -> 0 (beta = 1/2) is the logarithmic limit
    return np.pi * rc**2 * s0 * (np.log(x) if abs(e) < 1e-9 else (x**e - 1.0) / e)


def _beta_surface(r, s0, rc, beta):
    return s0 * (1.0 + (r / rc) ** 2) ** (0.5 - 3.0 * beta)


@dataclass(frozen=True)
class Aperture:
    net_counts: float  # source counts in the annulus (measured where it lies in the image)
    background: float  # background counts subtracted inside the image
    covered: float  # fraction of the annulus area that lies inside the image (and on the detector)
    extrapolated: float  # beta-model counts added for the part outside the image or off the detector (0 if none)


def fit_beta(image: np.ndarray, r_min_pix: float, background_per_pixel: float, n_bins: int = 16,
             seen: np.ndarray | None = None):
    """(s0, rc, beta) of a beta model fitted to the background-subtracted surface brightness from
    ``r_min_pix`` to the image corners (annuli of equal log width, Poisson weights); ``seen``: each
    pixel's exposure fraction (None: 1), the area it counts for."""
    from scipy.optimize import curve_fit

    p = image.shape[-1]
    r_max = np.hypot(p / 2.0, p / 2.0)
    edges = np.geomspace(max(r_min_pix, 1.0), r_max, n_bins + 1)
    rad = pixel_radius(p)
    idx = np.digitize(rad.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    weight = None if seen is None else seen.ravel()[ok]
    area = np.bincount(idx[ok], weights=weight, minlength=n_bins)
    counts = np.bincount(idx[ok], weights=image.ravel()[ok], minlength=n_bins)
    r_mean = np.bincount(idx[ok], weights=rad.ravel()[ok] * (1.0 if weight is None else weight),
                         minlength=n_bins) / np.where(area > 0, area, 1)
    use = area >= 1  # at least a whole pixel's exposure
    sb = counts[use] / area[use] - background_per_pixel
    err = np.sqrt(np.maximum(counts[use], 1.0)) / area[use]
    r = r_mean[use]
    guess = (max(float(sb[0]), 1e-3) * 2.0, max(r_min_pix, 1.0), 0.65)
    popt, _ = curve_fit(_beta_surface, r, sb, p0=guess, sigma=err, absolute_sigma=True, maxfev=5000,
                        bounds=([0.0, 0.1, 0.35], [np.inf, 4.0 * r_max, 2.0]))
    return tuple(float(v) for v in popt)


def needs_beta(r_out_pix: float, pixels: int, seen: np.ndarray | None) -> bool:
    """Whether part of an annulus is unseen: off the image, or (with an exposure map) off the detector."""
    return r_out_pix > pixels / 2.0 or seen is not None


def annulus_counts(image: np.ndarray, r_in_pix: float, r_out_pix: float, background_per_pixel: float,
                   extrapolate: bool = True, beta: tuple[float, float, float] | None = None,
                   seen: np.ndarray | None = None) -> Aperture:
    """Background-subtracted counts between two radii (pixels) about the image centre.

    Where the annulus runs off the image (R500c of massive clusters is larger than a 20' field at
    z = 0.05) or, given the exposure map ``seen`` (each pixel's fraction of the exposure on the
    detector), off the chips, the missing part is filled with a beta model (s0, rc, beta) fitted to
    the image beyond the inner radius (``extrapolate``; pass ``beta`` to reuse a fit), otherwise
    only the part seen is counted. The background is subtracted where the detector was.
    """
    p = image.shape[-1]
    w = disc_fraction(p, r_out_pix) - disc_fraction(p, r_in_pix)
    ws = w if seen is None else w * seen
    area = np.pi * (r_out_pix**2 - r_in_pix**2)
    bkg = background_per_pixel * ws.sum()
    net = float((w * image).sum() - bkg)
    covered = float(ws.sum() / area)
    extra = 0.0
    if extrapolate and needs_beta(r_out_pix, p, seen):
        model = beta or fit_beta(image, r_in_pix, background_per_pixel, seen=seen)
        inside = float((ws * _beta_surface(pixel_radius(p), *model)).sum())
        extra = float(beta_counts(r_out_pix, *model) - beta_counts(r_in_pix, *model)) - inside
    return Aperture(net + extra, float(bkg), covered, extra)


def background_per_pixel(rate_per_s_arcmin2: float, exposure_s: float, pixel_arcsec: float) -> float:
    """Expected background counts per image pixel from a flat rate [counts s^-1 arcmin^-2] in the band."""
    return rate_per_s_arcmin2 * exposure_s * (pixel_arcsec / 60.0) ** 2


def energy_flux_per_count(area_cm2, emin_kev: float, emax_kev: float, kt_kev: float = 5.0) -> float:
    """Band energy flux per count [erg cm^-2] for a thermal-bremsstrahlung-like photon spectrum
    exp(-E/kT)/E seen through the effective area ``area_cm2(E)``: one constant for every cluster,
    so it sets the normalisation of L_X but cannot change any scatter."""
    e = np.linspace(emin_kev, emax_kev, 4000)
    photons = np.exp(-e / kt_kev) / e
    return float(np.trapezoid(photons * e, e) * KEV_ERG / np.trapezoid(photons * area_cm2(e), e))


def counts_to_luminosity(counts: np.ndarray, exposure_s: float, erg_cm2_per_count: float,
                         luminosity_distance_cm: float) -> np.ndarray:
    """L [erg/s] = 4 pi D_L^2 x (counts / exposure) x (energy flux per unit count rate)."""
    return 4.0 * np.pi * luminosity_distance_cm**2 * np.asarray(counts) / exposure_s * erg_cm2_per_count


def log10_positive(x) -> np.ndarray:
    """log10 of ``x`` where it is positive, NaN elsewhere (no counts, no luminosity, no mass)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def aperture_draws(seed: int, clusters: np.ndarray) -> np.ndarray:
    """One standard-normal draw per cluster, keyed by the cluster: the direction of its R500c error.

    The same draw is scaled by each error level, so the 3% and 5% cases differ only in size.
    """
    from ..seeding import rng

    return np.array([rng(seed, "report", "lx_aperture", int(c)).standard_normal() for c in clusters])


@dataclass(frozen=True)
class ApertureVariant:
    """How a test cluster's L_X aperture is placed: ``moves`` is "none" (the true R500c), "outer"
    (a fractional R500c ``error`` on the outer radius only), "whole" (on R500c, both radii) or
    "iterated" (R500c from the mass the cluster's own L_X gives, no truth)."""

    key: str
    moves: str
    error: float = 0.0

    @property
    def label(self) -> str:
        return {"none": "exact R500c", "outer": f"{100 * self.error:g}% R500c error on the outer radius",
                "whole": f"{100 * self.error:g}% R500c error on the whole aperture",
                "iterated": "R500c iterated from its own L_X"}[self.moves]


def aperture_variants(errors) -> list[ApertureVariant]:
    """The exact aperture, each error on the outer radius and on the whole aperture, and the iterated one."""
    return ([ApertureVariant("exact", "none")]
            + [ApertureVariant(f"{moves}_{e:g}", moves, float(e)) for moves in ("outer", "whole") for e in errors]
            + [ApertureVariant("iterated", "iterated")])


def aperture_radii(variant: ApertureVariant, r500: float, draw: float, inner: float,
                   outer: float) -> tuple[float, float]:
    """(inner, outer) radius of the annulus, in the units of ``r500``, for a cluster whose R500c error
    has the standard-normal direction ``draw`` (:func:`aperture_draws`)."""
    scale = 1.0 + variant.error * draw
    if variant.moves == "outer":
        return inner * r500, outer * r500 * scale
    if variant.moves == "whole":
        return inner * r500 * scale, outer * r500 * scale
    if variant.moves == "none":
        return inner * r500, outer * r500
    raise ValueError(f"the {variant.key!r} aperture has no fixed radii (it is iterated)")


@dataclass(frozen=True)
class Iterated:
    log_m: float  # NaN when an aperture had no net counts
    log_lx: float
    r500: float
    iterations: int
    converged: bool


def iterate_mass(log_lx_within, relation, r500_of, log_m_start: float, tol: float = 1e-4,
                 max_iter: int = 50) -> Iterated:
    """The fixed point of M -> relation(log L_X within the aperture of R500c(M)): the truth-free mass.

    ``log_lx_within(r500)`` measures log L_X (NaN if not positive) in the aperture scaled to ``r500``;
    ``relation(log_lx)`` is the fold's L_X-M power law; ``r500_of(log_m)`` the R500c of a mass.
    Converged when log M moves by less than ``tol`` dex.
    """
    log_m = float(log_m_start)
    for it in range(1, max_iter + 1):
        r500 = float(r500_of(log_m))
        log_lx = float(log_lx_within(r500))
        new = float(relation(log_lx))
        if not np.isfinite(new):
            return Iterated(float("nan"), log_lx, r500, it, False)
        done = abs(new - log_m) < tol
        log_m = new
        if done:
            return Iterated(log_m, log_lx, r500, it, True)
    return Iterated(log_m, log_lx, r500, max_iter, False)


@dataclass(frozen=True)
class PowerLaw:
    """log y = intercept + slope x (log x - pivot); scatter = RMS residual in log y (dex)."""

    intercept: float
    slope: float
    pivot: float
    scatter: float

    def __call__(self, log_x):
        return self.intercept + self.slope * (np.asarray(log_x) - self.pivot)

    def as_dict(self) -> dict:
        return asdict(self)


def fit_power_law(log_x: np.ndarray, log_y: np.ndarray) -> PowerLaw:
    """Least-squares line in log-log space, pivoted at the median of log x."""
    log_x, log_y = np.ravel(log_x), np.ravel(log_y)
    ok = np.isfinite(log_x) & np.isfinite(log_y)
    if ok.sum() < 3:
        raise ValueError(f"a power-law fit needs at least 3 finite points, got {int(ok.sum())}")
    pivot = float(np.median(log_x[ok]))
    slope, intercept = np.polyfit(log_x[ok] - pivot, log_y[ok], 1)
    resid = log_y[ok] - (intercept + slope * (log_x[ok] - pivot))
    return PowerLaw(float(intercept), float(slope), pivot, float(np.sqrt(np.sum(resid**2) / (ok.sum() - 2))))


def predict_by_fold(log_lx: np.ndarray, log_m: np.ndarray, fold: np.ndarray,
                    train_of: Mapping[int, np.ndarray]) -> tuple[np.ndarray, dict[int, PowerLaw]]:
    """Mass of every test cluster from the L_X-M relation fitted on its fold's training clusters.

    ``log_lx`` is (clusters, measurements) (e.g. one per projection); every measurement of a
    training cluster enters the fit with its cluster's mass. ``train_of[k]`` is the boolean mask
    of training clusters when fold k is the test fold. A fold with fewer than 3 usable training
    measurements gets no relation: its predictions stay NaN and it is absent from the fits.
    """
    log_lx = np.asarray(log_lx, dtype=np.float64).reshape(len(log_m), -1)
    pred = np.full(log_lx.shape, np.nan)
    fits = {}
    for k, train in train_of.items():
        mtrain = np.broadcast_to(np.asarray(log_m)[train][:, None], log_lx[train].shape)
        if (np.isfinite(log_lx[train]) & np.isfinite(mtrain)).sum() < 3:
            continue
        fits[int(k)] = fit = fit_power_law(log_lx[train], mtrain)
        test = fold == k
        pred[test] = fit(log_lx[test])
    return pred, fits
