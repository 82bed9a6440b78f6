"""DeepDream-style interpretation: gradients, iterations, radial profiles and the off-centre flag."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmass.interpret.dream import (
    dream,
    dream_step,
    input_gradient,
    profile_summary,
    radial_profile,
    response_offset,
    scale_gradient,
    small_change_mask,
)
from hpcmass.images import radius_r500c


def _tiny_cnn_float64(pixels: int, seed: int = 0):
    """The paper's layer types at toy size, in float64, with the count scaling inside the graph."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((pixels, pixels), dtype="float64")
    x = keras.layers.Lambda(lambda t: tf.math.log1p(t)[..., None], dtype="float64")(inp)
    for filters in (4, 8):
        x = keras.layers.Conv2D(filters, 3, activation="relu", dtype="float64")(x)
        x = keras.layers.MaxPooling2D(2, dtype="float64")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float64")(x)
    x = keras.layers.Dense(8, activation="relu", dtype="float64")(x)
    out = keras.layers.Dense(1, dtype="float64", bias_initializer=keras.initializers.Constant(14.0))(x)
    model = keras.Model(inp, out)
    return lambda counts: model(tf.cast(counts, tf.float64), training=False)


def test_gradient_matches_central_finite_differences():
    import tensorflow as tf

    p = 24
    predict = _tiny_cnn_float64(p)
    counts = np.random.default_rng(0).poisson(30.0, (2, p, p)).astype(np.float64)
    pred, grad = input_gradient(predict, counts)
    assert pred.shape == (2,) and grad.shape == counts.shape
    assert np.abs(grad).max() > 0

    def f(x):
        return predict(tf.constant(x)).numpy().ravel()

    h = 1e-5
    pixels = np.random.default_rng(1).integers(0, p, (12, 2))
    # the strongest pixel too, so the comparison cannot pass on zeros alone
    top = np.unravel_index(np.argmax(np.abs(grad[1])), grad[1].shape)
    for b, (i, j) in [(0, tuple(ij)) for ij in pixels] + [(1, top)]:
        up, down = counts.copy(), counts.copy()
        up[b, i, j] += h
        down[b, i, j] -= h
        fd = (f(up)[b] - f(down)[b]) / (2 * h)
        # float32 input cast: the analytic gradient is exact to ~1e-7 relative, FD to ~1e-9 absolute
        assert grad[b, i, j] == pytest.approx(fd, rel=1e-4, abs=1e-8)
        # the other image of the batch does not see this pixel
        assert f(up)[1 - b] == f(counts)[1 - b]


def test_scale_gradient_and_dream_step():
    g = np.random.default_rng(2).normal(0, 1e-4, (3, 8, 8))
    s = scale_gradient(g, "rms", 2.5)
    assert np.sqrt((s**2).mean(axis=(1, 2))) == pytest.approx([2.5] * 3)
    assert np.array_equal(scale_gradient(g, "none", 3.0), 3.0 * g)
    assert not np.isnan(scale_gradient(np.zeros((1, 4, 4)), "rms", 1.0)).any()
    # Images of several bands: one RMS over the whole image, so the bands keep their relative response.
    g3 = np.random.default_rng(2).normal(0, 1e-4, (3, 2, 8, 8)) * np.array([1.0, 5.0])[:, None, None]
    s3 = scale_gradient(g3, "rms", 2.5)
    assert np.sqrt((s3**2).mean(axis=(1, 2, 3))) == pytest.approx([2.5] * 3)
    np.testing.assert_allclose(s3 / g3, (s3 / g3)[:, :1, :1, :1] * np.ones_like(g3))
    with pytest.raises(ValueError, match="gradient norm"):
        scale_gradient(g, "max", 1.0)
    counts = np.array([[[0.0, 3.0], [10.0, 1.0]]])
    assert np.array_equal(dream_step(counts, np.array([[[-2.0, 0.6], [-0.4, -3.0]]])), [[[0, 4], [10, 0]]])


def test_dream_iterates_on_the_updated_image():
    import tensorflow as tf

    # A linear "network": its gradient is w everywhere, so every step is known exactly.
    w = np.zeros((6, 6))
    w[2:4, 2:4] = 1.7
    w[0, 0] = -2.2
    wt = tf.constant(w)

    def predict(x):
        return tf.reduce_sum(tf.cast(x, tf.float64) * wt, axis=(1, 2))

    counts = np.full((1, 6, 6), 5.0)
    counts[0, 0, 0] = 3.0
    d = dream(predict, counts, iterations=2, norm="none", step=1.0)
    assert d.images.shape == (3, 1, 6, 6) and d.pred.shape == (3, 1)
    one = np.rint(np.maximum(counts + w, 0))
    two = np.rint(np.maximum(one + w, 0))
    assert np.array_equal(d.images[1], one) and np.array_equal(d.images[2], two)
    assert np.allclose(d.pred[:, 0], [(w * im).sum() for im in (counts[0], one[0], two[0])])
    assert np.allclose(d.grad, w)
    assert np.array_equal(d.delta[1], two - counts)


def test_radial_profile_in_units_of_r500c():
    p = 40
    r = radius_r500c(p, pixel_kpc=10.0, r500c_kpc=200.0)  # 20 pixels per R500c
    assert r.min() == pytest.approx(np.hypot(0.5, 0.5) / 20)
    n0 = np.full((p, p), 10.0)
    n0[:4, :] = 0.0  # a strip with no photons: its pixels count only in the sums
    dn = np.where(r < 0.5, 1.0, 0.0)
    edges = np.linspace(0, 1.5, 16)
    prof = radial_profile(np.stack([dn, 2 * dn]), n0, r, edges)
    assert prof.shape == (2, 15)
    assert np.allclose(prof[0, :5], 0.1) and np.allclose(prof[0, 5:10], 0.0)
    assert np.allclose(prof[1, :5], 0.2)
    assert np.isnan(prof[0, -1])  # beyond the image corner (1.41 R500c)
    assert np.array_equal(small_change_mask(np.array([0.0, 0.2, 0.3, 1.0]), np.array([0.0, 10.0, 10.0, 0.0]), 0.02),
                          [True, True, False, False])
    med, p16, p84 = profile_summary(np.stack([prof[0], prof[1], prof[1]])[:, None, :])
    assert np.allclose(med[0, :5], 0.2) and np.isnan(med[0, -1]) and (p16 <= p84)[~np.isnan(p16)].all()


def _ring(p, cx, cy, radius, width=2.0):
    yy, xx = np.mgrid[:p, :p]
    return np.exp(-0.5 * ((np.hypot(xx - cx, yy - cy) - radius) / width) ** 2)


def test_response_offset_flags_an_off_centre_ring():
    p = 64
    c = (p - 1) / 2
    noise = np.random.default_rng(3).normal(0, 0.02, (p, p))
    centred = _ring(p, c, c, 10) + noise
    shifted = _ring(p, c + 12, c - 5, 6) + noise
    off = response_offset(np.stack([centred, -shifted]), pixel_kpc=10.0, r500c_kpc=260.0, top_fraction=0.02)
    assert off[0] < 0.03
    assert off[1] == pytest.approx(13.0 / 26.0, abs=0.05)


@pytest.mark.parametrize("bands", [1, 3])
def test_paper_cnn_gradient_in_counts_matches_a_directional_difference(bands):
    """The trained-model path: the paper's CNN (log1p scaling inside) takes raw counts of every energy
    band. Built in float64 so that a small step stays clear of both rounding and the ReLU/max-pool kinks."""
    import tensorflow as tf
    import tf_keras

    from hpcmass.train.model import build_model

    tf_keras.utils.set_random_seed(4)
    tf_keras.backend.set_floatx("float64")
    try:
        model = build_model(32, "log1p", seed=0, bands=bands)
    finally:
        tf_keras.backend.set_floatx("float32")
    model.layers[-1].bias.assign([14.0])

    def predict(x):
        return model(x, training=False)

    counts = np.random.default_rng(5).poisson(20.0, (3, bands, 32, 32)).astype(np.float64)
    _, grad = input_gradient(predict, counts)
    # along the gradient's signs with random sizes: a change far above rounding
    direction = np.sign(grad) * np.random.default_rng(6).uniform(0.5, 1.0, counts.shape)
    # small enough that no ReLU/max-pool kink is crossed (1e-3 crossed one with 3 bands: 2e-3 off)
    eps = 1e-4

    def f(x):
        return model(tf.constant(x, tf.float64), training=False).numpy()[:, 0]

    fd = (f(counts + eps * direction) - f(counts - eps * direction)) / (2 * eps)
    analytic = (grad * direction).sum(axis=(1, 2, 3))
    assert analytic.min() > 1e-4
    # ScaleCounts works in float32 (counts of ~20 resolved to ~2e-6; a 1e-4 step to ~5%, averaged over
    # every pixel): measured 5e-4 relative
    assert analytic == pytest.approx(fd, rel=2e-3)
