"""Cluster images: their geometry and the paper's 24 views, shared by every stage that looks at images.

An image is ``(bands, P, P)`` counts, one channel per energy band of ``observe.bands`` (the
paper's one broad band: ``bands = 1``); a cluster's projections are ``(axes, bands, P, P)``.

Geometry: an image is a square field centred on the cluster; pixel centres sit at
``(i - (P - 1) / 2)`` pixels from the centre; :func:`pixel_arcsec` and :func:`kpc_per_arcsec` turn
pixels into angles and physical lengths.

Views: 3 projections × {identity, flip} × 4 rotations of 90°.
{identity, left-right flip} × {0°, 90°, 180°, 270°} is the whole symmetry group of a square
(the dihedral group D4, 8 elements): the paper's "reflections along the vertical and horizontal
axes" are both in it (an up-down flip is the left-right flip rotated by 180°), so 8 views per
projection are all the distinct ones.

View order (everywhere: the store's ``views`` axis, the tf.data pipeline, the interpretation)::

    view = 8 * axis + 4 * flip + k      image = rot90(fliplr(projection) if flip else projection, k)

i.e. axis-major, then flip, then the counter-clockwise rotation k·90° (``np.rot90`` convention,
first image axis = rows). Views are generated on the fly from the stored projections.
"""

from __future__ import annotations

import itertools

import numpy as np

#: Views per cluster with the paper's 3 projections.
N_VIEWS = 24
#: Views per projection: the 8 symmetries of a square.
VIEWS_PER_AXIS = 8
#: The view order in words (stored as an attribute beside every array with a views axis).
VIEW_ORDER = "view = 8*axis + 4*flip + k: rot90(fliplr(projection) if flip else projection, k); axes as in /observe"


def _ops(x):
    """(flip last axis, swap last two axes, stack) for numpy arrays or TensorFlow tensors."""
    if isinstance(x, np.ndarray):
        return (lambda a: a[..., ::-1], lambda a: np.swapaxes(a, -1, -2), lambda xs: np.stack(xs, axis=-4))
    import tensorflow as tf

    def swap(a):
        perm = list(range(a.shape.rank))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        return tf.transpose(a, perm)

    return (lambda a: tf.reverse(a, [-1]), swap, lambda xs: tf.stack(xs, axis=-4))


def make_views(projections):
    """All views of projections ``(..., n_axes, bands, P, P)`` -> ``(..., 8 * n_axes, bands, P, P)`` in the
    order above (every energy band of a view turned alike).

    Works on numpy arrays and on TensorFlow tensors (so also inside tf.data / tf.function).
    """
    flip, swap, stack = _ops(projections)
    if len(projections.shape) < 4 or projections.shape[-1] != projections.shape[-2]:
        raise ValueError(f"projections must be (..., axes, bands, P, P) with square images, got shape "
                         f"{tuple(projections.shape)}")
    n_axes = projections.shape[-4]
    out = []
    for a in range(n_axes):
        img = projections[..., a, :, :, :]
        for mirrored in (img, flip(img)):
            view = mirrored
            for _ in range(4):
                out.append(view)
                view = swap(flip(view))  # np.rot90(m) == flip(m, axis=1).T: one counter-clockwise turn
    return stack(out)


def view_operations() -> np.ndarray:
    """``(8, 3)`` bool: each view of a projection as (mirror columns, mirror rows, transpose), in that order.

    The 8 symmetries of a square are exactly these combinations. The tf.data pipeline applies
    each operation to a whole batch and keeps it where an image's view needs it: contiguous
    memory operations only, whatever view each image of the batch gets.
    """
    index = np.arange(9).reshape(3, 3)  # no symmetry: identifies the view
    table = []
    for view in make_views(index[None, None])[:, 0]:
        for cols, rows, transpose in itertools.product((False, True), repeat=3):
            m = index[:, ::-1] if cols else index
            m = m[::-1] if rows else m
            if np.array_equal(m.T if transpose else m, view):
                table.append((cols, rows, transpose))
                break
    return np.array(table, dtype=bool)


def pixel_radius(pixels: int) -> np.ndarray:
    """(P, P) distance [pixels] of each pixel centre from the image centre, where the cluster sits."""
    c = (pixels - 1) / 2.0
    yy, xx = np.mgrid[:pixels, :pixels]
    return np.hypot(xx - c, yy - c)


def radius_r500c(pixels: int, pixel_kpc: float, r500c_kpc: float) -> np.ndarray:
    """(P, P) projected distance of each pixel centre from the image centre, in R500c."""
    return pixel_radius(pixels) * (pixel_kpc / r500c_kpc)


def pixel_arcsec(fov_arcmin: float, pixels: int) -> float:
    return fov_arcmin * 60.0 / pixels


def kpc_per_arcsec(redshift: float, hubble: float, omega_matter: float, omega_lambda: float) -> float:
    """Physical kpc per arcsec at ``redshift`` in the simulation's cosmology (yt's, as pyXSIM uses)."""
    from yt.utilities.cosmology import Cosmology

    cosmo = Cosmology(hubble_constant=hubble, omega_matter=omega_matter, omega_lambda=omega_lambda)
    d_a = cosmo.angular_diameter_distance(0.0, redshift).to_value("kpc")
    return float(d_a * np.pi / 180.0 / 3600.0)


def at_exposure(counts, exposure_ks, reference_ks: float) -> np.ndarray:
    """Counts ``(..., bands, P, P)`` of observations ``exposure_ks`` ``(...)`` long scaled to ``reference_ks``
    (float32): what a network trained on a range of exposures sees (``observe.exposure_range_ks``)."""
    scale = reference_ks / np.asarray(exposure_ks, dtype=np.float64)
    return (np.asarray(counts) * scale[..., None, None, None]).astype(np.float32)


def bands_label(bands) -> str:
    """Energy bands in words: ``[[0.5, 1.2], [1.2, 7]]`` -> ``"0.5-1.2, 1.2-7 keV"``."""
    return ", ".join(f"{lo:g}-{hi:g}" for lo, hi in bands) + " keV"
