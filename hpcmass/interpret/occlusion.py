"""Occlusion: does the CNN use a region? Replace it by an average cluster's and see the mass move.

No gradients, so none of the rounding and scaling that shape the DeepDream profiles. A region
(an annulus in units of R500c) of a view is replaced, in each energy band, by a Poisson draw of
the mean radial profile of its fold's training clusters in that band, scaled to the cluster's
R500c (radii) and to its counts outside the region; Delta log M = prediction of the occluded view - prediction of the view. What the
region held beyond "an average cluster of this brightness" is gone; if the network ignored it,
Delta log M stays at the level of the Poisson noise of the draw.

That noise floor is measured, not assumed: each region is also filled from the view's *own*
azimuthally averaged profile (same counts, same radial shape; only the azimuthal structure and
the photons' positions are redrawn). The difference between the two fills is what the region's
cluster-specific radial profile tells the network.
"""

from __future__ import annotations

import numpy as np

#: Radial bins of the mean profile [R500c]: 5-14 kpc for R500c of 0.5-1.4 Mpc, about the demo's
#: 9 kpc pixels (128 px over 20' at z = 0.05), so the fill keeps a core's shape.
PROFILE_BIN_R500C = 0.01


def mean_profile(images: np.ndarray, radii: np.ndarray, bin_r500c: float = PROFILE_BIN_R500C) -> np.ndarray:
    """The mean radial shape of ``images`` (m, P, P) with pixel radii ``radii`` (m, P, P) [R500c].

    Each image's counts per pixel in bins of ``bin_r500c``, divided by its mean counts per pixel
    within the largest radius [R500c] that lies inside every image (so that each image is
    normalised over the same part of the cluster, whatever its R500c in pixels), averaged over
    the images that reach the bin; NaN where none does. Bin j covers [j, j + 1) x bin_r500c.
    """
    images, radii = np.asarray(images, dtype=np.float64), np.asarray(radii, dtype=np.float64)
    r_inside_all = radii[:, 0, :].min()  # each image's nearest border pixel; the smallest of them
    idx = (radii / bin_r500c).astype(np.int64)
    nbins = int(idx.max()) + 1
    shapes = np.full((images.shape[0], nbins), np.nan)
    for k, (img, r, ix) in enumerate(zip(images, radii, idx)):
        pixels = np.bincount(ix.ravel(), minlength=nbins)
        counts = np.bincount(ix.ravel(), weights=img.ravel(), minlength=nbins)
        norm = max(img[r < r_inside_all].mean(), np.finfo(np.float64).tiny)  # per pixel: any pixel size
        with np.errstate(invalid="ignore", divide="ignore"):
            shapes[k] = np.where(pixels > 0, counts / np.where(pixels > 0, pixels, 1) / norm, np.nan)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no image reaches stay NaN
        return np.nanmean(shapes, axis=0)


def profile_at(shape: np.ndarray, radius: np.ndarray, bin_r500c: float = PROFILE_BIN_R500C) -> np.ndarray:
    """The mean shape at pixel radii ``radius`` [R500c], interpolated between bin centres (flat beyond
    the first and last bins any image reached)."""
    centres = (np.arange(shape.size) + 0.5) * bin_r500c
    ok = np.isfinite(shape)
    return np.interp(radius, centres[ok], shape[ok])


def fill_expectation(counts: np.ndarray, radius: np.ndarray, inside: np.ndarray, shape: np.ndarray,
                     bin_r500c: float = PROFILE_BIN_R500C) -> np.ndarray:
    """Expected counts per pixel of the mean shape, normalised so that it holds the image's own counts
    outside the region ``inside`` (bool, P x P): the region is filled as an average cluster of this
    brightness. ``counts`` is (..., P, P); the result has its shape."""
    model = profile_at(shape, radius, bin_r500c)
    outside = ~inside
    scale = counts[..., outside].sum(axis=-1) / max(model[outside].sum(), np.finfo(np.float64).tiny)
    return scale[..., None, None] * model


def occlude(counts: np.ndarray, radius: np.ndarray, inner: float, outer: float, shape: np.ndarray,
            rng: np.random.Generator, bin_r500c: float = PROFILE_BIN_R500C) -> np.ndarray:
    """``counts`` (..., P, P) with the pixels at inner <= r < outer [R500c] replaced by a Poisson draw of
    :func:`fill_expectation`; pixels outside the region are untouched."""
    counts = np.asarray(counts, dtype=np.float64)
    inside = (radius >= inner) & (radius < outer)
    lam = fill_expectation(counts, radius, inside, shape, bin_r500c)
    out = counts.copy()
    out[..., inside] = rng.poisson(lam[..., inside])
    return out


#: How an occluded region is filled (the ``fills`` axis of the store's occlusion_dlogm).
FILLS = ("fold_mean", "own_profile")


def occluded_views(views: np.ndarray, radius: np.ndarray, regions: dict[str, tuple[float, float]],
                   fold_shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(regions, fills, views, bands, P, P): each region of ``views`` (views, bands, P, P) filled, band by
    band, as each of :data:`FILLS`: from ``fold_shape`` (bands, bins) (:func:`mean_profile` of the fold's
    training clusters in each band), and from the view's own mean profile in that band (the noise
    floor). Draws come from ``rng`` in that order, band by band."""
    return np.stack([_occluded_band(views[:, b], radius, regions, fold_shape[b], rng) for b in range(views.shape[1])],
                    axis=3)


def _occluded_band(views: np.ndarray, radius: np.ndarray, regions: dict[str, tuple[float, float]],
                   fold_shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(regions, fills, views, P, P) of one band's images ``views`` (views, P, P)."""
    own = [mean_profile(v[None], radius[None]) for v in views]
    return np.stack([np.stack([occlude(views, radius, lo, hi, fold_shape, rng),
                               np.stack([occlude(v, radius, lo, hi, shape, rng) for v, shape in zip(views, own)])])
                     for lo, hi in regions.values()])
