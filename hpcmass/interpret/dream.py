"""DeepDream-style interpretation of the mass CNN (Ntampaka et al. 2019, Section 4), as pure functions.

The "loss" is the network's output, log10 M500c; its gradient with respect to the input counts
says which photons would make the cluster look more massive. Each iteration adds the (scaled)
gradient to the image, sets negative pixels to 0 and rounds to whole photons, then repeats on
the new image. What is kept is compact: predictions per iteration, radial Delta N / N profiles in
units of R500c, Figure 5's maps for one view, and where the strongest response sits.

Changes are cumulative: Delta N after iteration t is N_t - N_0 (the paper's "iterated image
... to the photons in the original image"). A radial bin's Delta N / N is the ratio of the
photon sums in the annulus, which stays defined where single pixels hold no photons.

The procedure itself shapes the picture (rescaling and rounding cap a pixel's change at a few
photons), so each cluster is also explained by null models (:mod:`.nulls`) through the same
iterations, and occluded region by region (:mod:`.occlusion`): see :func:`explain_cluster`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..images import make_views, radius_r500c

#: predict(counts) -> log10 M: a TensorFlow-differentiable function of raw counts, (batch, bands, P, P) -> (batch,).
Predict = Callable[[object], object]


def evaluate(predict: Predict, counts: np.ndarray) -> np.ndarray:
    """Predicted log M of each image of the batch (no gradient)."""
    import tensorflow as tf

    return np.asarray(tf.reshape(predict(tf.convert_to_tensor(np.asarray(counts, dtype=np.float32))), (-1,)),
                      dtype=np.float64)


def input_gradient(predict: Predict, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted log M and its gradient with respect to each pixel's counts, per image of the batch."""
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(counts, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reshape(predict(x), (-1,))
        # Images are independent in inference mode, so d(sum)/dx_i is image i's own gradient.
        total = tf.reduce_sum(y)
    return y.numpy().astype(np.float64), tape.gradient(total, x).numpy().astype(np.float64)


def scale_gradient(grad: np.ndarray, norm: str, step: float) -> np.ndarray:
    """The change added to each image of the batch (first axis): ``step`` x gradient, or rescaled to an
    RMS of ``step`` counts per pixel over the whole image (every band: their relative response stays)."""
    if norm == "none":
        return step * grad
    if norm == "rms":
        rms = np.sqrt(np.mean(grad**2, axis=tuple(range(1, grad.ndim)), keepdims=True))
        return step * grad / np.maximum(rms, np.finfo(np.float64).tiny)
    raise ValueError(f"gradient norm {norm!r}: expected 'rms' or 'none'")


def dream_step(counts: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Add the change, keep the image physical: no negative counts, whole photons."""
    return np.rint(np.maximum(counts + change, 0.0))


@dataclass(frozen=True)
class Dream:
    images: np.ndarray  # (iterations + 1, batch, bands, P, P) counts; [0] is the input
    pred: np.ndarray  # (iterations + 1, batch) log10 M of each image
    grad: np.ndarray  # (batch, bands, P, P) raw gradient of the input image (iteration 1)

    @property
    def delta(self) -> np.ndarray:
        """(iterations, batch, bands, P, P): N_t - N_0 after each iteration."""
        return self.images[1:] - self.images[0]


def dream(predict: Predict, counts: np.ndarray, iterations: int, norm: str = "rms", step: float = 1.0) -> Dream:
    """Run the DeepDream-style iterations on a batch of raw-count images."""
    images = [np.asarray(counts, dtype=np.float64)]
    preds = []
    first_grad = None
    for _ in range(iterations):
        pred, grad = input_gradient(predict, images[-1])
        first_grad = grad if first_grad is None else first_grad
        preds.append(pred)
        images.append(dream_step(images[-1], scale_gradient(grad, norm, step)))
    preds.append(evaluate(predict, images[-1]))
    return Dream(np.stack(images), np.stack(preds), first_grad)


def radial_profile(delta: np.ndarray, counts: np.ndarray, radius: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Delta N / N in radial bins: sum of Delta N over sum of N in each annulus; NaN where N sums to 0.

    ``delta`` and ``counts`` are (..., P, P) and broadcast against each other; ``radius`` is (P, P).
    """
    nbins = len(edges) - 1
    idx = np.digitize(radius.ravel(), edges) - 1
    inside = (idx >= 0) & (idx < nbins)
    onehot = np.zeros((radius.size, nbins))
    onehot[np.flatnonzero(inside), idx[inside]] = 1.0
    delta, counts = np.broadcast_arrays(delta, counts)
    lead = delta.shape[:-2]
    dsum = delta.reshape(-1, radius.size) @ onehot
    nsum = counts.reshape(-1, radius.size) @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(nsum > 0, dsum / np.where(nsum > 0, nsum, 1.0), np.nan)
    return out.reshape(*lead, nbins)


def region_response(delta: np.ndarray, counts: np.ndarray, radius: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """|Delta N| summed over the annulus inner <= r < outer [R500c] over N summed there, per image of
    (..., P, P); NaN where the annulus holds no counts. Absolute changes: a null may remove photons."""
    inside = (radius >= inner) & (radius < outer)
    delta, counts = np.broadcast_arrays(delta, counts)
    n = counts[..., inside].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(delta[..., inside]).sum(axis=-1) / np.where(n > 0, n, 1.0), np.nan)


def core_response(delta: np.ndarray, counts: np.ndarray, radius: np.ndarray, core: float,
                  outskirts: tuple[float, float]) -> np.ndarray:
    """How strongly the core responds relative to the outskirts: :func:`region_response` within ``core``
    over that in the ``outskirts`` annulus [R500c]. 1: the same fractional change; ~0: the paper's
    "ignored core". NaN where the outskirts did not change or hold no counts."""
    outer = region_response(delta, counts, radius, *outskirts)
    inner = region_response(delta, counts, radius, 0.0, core)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(outer > 0, inner / np.where(outer > 0, outer, 1.0), np.nan)


def small_change_mask(delta: np.ndarray, counts: np.ndarray, fraction: float) -> np.ndarray:
    """Figure 5's bottom row: pixels whose counts changed by at most ``fraction`` (0 -> 0 counts as small)."""
    return np.abs(delta) <= fraction * counts


def response_offset(grad: np.ndarray, pixel_kpc: float, r500c_kpc: float, top_fraction: float) -> np.ndarray:
    """Distance [R500c] of the strongest response from the image centre, per image.

    The response centre is the |gradient|-weighted centroid of the ``top_fraction`` of pixels with
    the largest |gradient|. A network that reads the cluster adds photons in a ring around the
    true centre (centroid near it); the paper's outlier built its ring around an off-centre bright
    spot it took for the core.
    """
    batch, p, _ = grad.shape
    a = np.abs(grad).reshape(batch, -1)
    k = max(1, int(round(top_fraction * p * p)))
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    w = np.take_along_axis(a, top, axis=1)
    w_sum = w.sum(axis=1)
    w = np.where(w_sum[:, None] > 0, w / np.where(w_sum > 0, w_sum, 1.0)[:, None], 1.0 / k)
    yy, xx = np.divmod(top, p)
    c = (p - 1) / 2.0
    dy = (w * yy).sum(axis=1) - c
    dx = (w * xx).sum(axis=1) - c
    return np.hypot(dx, dy) * (pixel_kpc / r500c_kpc)


def profile_summary(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and 16th/84th percentiles over images of (images, iterations, bins) profiles (NaN-aware)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no image reaches stay NaN
        p16, med, p84 = np.nanpercentile(profiles, [16, 50, 84], axis=0)
    return med, p16, p84


#: The view whose Figure 5 maps are stored: view 0, the first projection as observed.
MAP_VIEW = 0


def radial_edges(ip) -> np.ndarray:
    """Bin edges [R500c] of the radial profiles for InterpretParams ``ip``."""
    return np.linspace(0.0, ip.radial_max_r500c, ip.radial_bins + 1)


def regions(ip) -> dict[str, tuple[float, float]]:
    """The compared regions [R500c] of InterpretParams ``ip``, by name: the core and the outskirts."""
    return {"core": (0.0, ip.core_r500c), "outskirts": tuple(ip.outskirts_r500c)}


def explain_cluster(predict: Predict, projections: np.ndarray, pixel_kpc: float, r500c_kpc: float, ip,
                    nulls: dict[str, Predict], mean_shape: np.ndarray, rng: np.random.Generator) -> dict:
    """Everything the interpret stage keeps for one cluster, keyed by its store dataset names.

    ``projections`` are the cluster's raw-count images (axes, bands, P, P); all their views are explained
    together as one batch (``ip`` is the run's InterpretParams) by the trained CNN ``predict`` and
    by each null of ``nulls`` (name -> Predict, in ``ip.nulls`` order) through the same iterations.
    Occlusion fills each region of :func:`regions` with a Poisson draw (``rng``) of ``mean_shape``
    (:func:`hpcmass.interpret.occlusion.mean_profile` of the fold's training clusters), and of each
    view's own profile (the noise floor). Every energy band changes; the profiles, core responses and
    maps read the change of all bands together (the broad band's photons), the response offset the
    |gradient| summed over bands.
    """
    from .occlusion import occluded_views

    views = make_views(np.asarray(projections)).astype(np.float64)
    d = dream(predict, views, ip.iterations, ip.gradient_norm, ip.step)
    radius = radius_r500c(views.shape[-1], pixel_kpc, r500c_kpc)
    edges = radial_edges(ip)
    delta = d.delta.sum(axis=-3)  # (iterations, views, P, P), all bands
    null_deltas = [dream(nulls[name], views, ip.iterations, ip.gradient_norm, ip.step).delta.sum(axis=-3)
                   for name in ip.nulls]
    offset = response_offset(np.abs(d.grad).sum(axis=-3), pixel_kpc, r500c_kpc, ip.response_top_fraction)
    occluded = occluded_views(views, radius, regions(ip), mean_shape, rng)
    pred_occluded = evaluate(predict, occluded.reshape(-1, *views.shape[1:])).reshape(occluded.shape[:3])
    views = views.sum(axis=-3)  # the broad band's counts: what the changes are measured against
    return {
        "pred_dream": d.pred.T,
        "profile": np.moveaxis(radial_profile(delta, views, radius, edges), 0, 1),
        "null_profile": np.stack([np.moveaxis(radial_profile(dn, views, radius, edges), 0, 1) for dn in null_deltas]),
        "core_response": np.stack([core_response(dn[-1], views, radius, ip.core_r500c, ip.outskirts_r500c)
                                   for dn in (delta, *null_deltas)]),
        "occlusion_dlogm": np.moveaxis(pred_occluded - d.pred[0], -1, 0),  # (views, regions, fills)
        "response_offset_r500c": offset,
        "off_centre": offset > ip.offcentre_r500c,
        "dn_map": delta[:, MAP_VIEW],
        "small_change_map": small_change_mask(delta[:, MAP_VIEW], views[MAP_VIEW], ip.small_change),
    }
