"""Null models, the core response and occlusion: known answers of the interpretation's controls."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmass.images import radius_r500c
from hpcmass.interpret.dream import core_response, dream, input_gradient, radial_profile, region_response
from hpcmass.interpret.nulls import analytic_null
from hpcmass.interpret.occlusion import fill_expectation, mean_profile, occlude, occluded_views, profile_at
from hpcmass.params import load_params

P, PIXEL_KPC, R500C_KPC = 48, 20.0, 400.0  # R500c = 20 pixels


def _cluster(seed: int = 0, norm: float = 400.0) -> np.ndarray:
    """Poisson counts of a beta-model cluster on a flat background: bright core, faint outskirts."""
    r = radius_r500c(P, PIXEL_KPC, R500C_KPC)
    return np.random.default_rng(seed).poisson(norm * (1 + (r / 0.1) ** 2) ** -1.5 + 0.5).astype(np.float64)


def test_log_sum_null_adds_one_photon_to_every_pixel():
    """f = log10 sum N has the same gradient in every pixel; rescaled to an RMS of one count it adds
    exactly one photon everywhere, so Delta N / N per annulus is its pixels over its counts."""
    counts = _cluster()[None]
    d = dream(analytic_null("log_sum"), counts, iterations=1, norm="rms", step=1.0)
    _, grad = input_gradient(analytic_null("log_sum"), counts)
    assert np.allclose(grad, 1 / (np.log(10) * counts.sum()), rtol=1e-6)
    assert np.array_equal(d.delta[0], np.ones_like(counts))
    r = radius_r500c(P, PIXEL_KPC, R500C_KPC)
    edges = np.linspace(0, 1.2, 7)
    idx = np.digitize(r, edges) - 1
    expected = [np.sum(idx == b) / counts[0][idx == b].sum() for b in range(6)]
    assert np.allclose(radial_profile(d.delta[0], counts, r, edges)[0], expected)
    # ... and its core response is the ratio of the regions' mean counts per pixel, inverted
    core, out = r < 0.15, (r >= 0.5) & (r < 1.0)
    known = (core.sum() / counts[0][core].sum()) / (out.sum() / counts[0][out].sum())
    assert core_response(d.delta[0], counts, r, 0.15, (0.5, 1.0))[0] == pytest.approx(known)
    assert known < 0.05  # a bright core: the procedure alone "ignores" it


def test_sum_log1p_null_gradient_is_the_scaling_alone():
    counts = _cluster(1)[None]
    pred, grad = input_gradient(analytic_null("sum_log1p"), counts)
    assert pred[0] == pytest.approx(np.log1p(counts).sum(), rel=1e-5)
    assert np.allclose(grad, 1 / (1 + counts), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown analytic null 'mean'"):
        analytic_null("mean")


def test_region_and_core_response_known_answers():
    counts = _cluster(2)[None]
    r = radius_r500c(P, PIXEL_KPC, R500C_KPC)
    # the same fractional change everywhere: response 1 (with either sign)
    assert core_response(-0.1 * counts, counts, r, 0.15, (0.5, 1.0))[0] == pytest.approx(1.0)
    # photons added only beyond the core: 0; only in the core: no outskirts change, undefined
    outskirts_only = np.where(r >= 0.5, 1.0, 0.0)[None]
    assert core_response(outskirts_only, counts, r, 0.15, (0.5, 1.0))[0] == 0.0
    assert np.isnan(core_response(np.where(r < 0.15, 1.0, 0.0)[None], counts, r, 0.15, (0.5, 1.0))[0])
    assert region_response(outskirts_only, counts, r, 0.5, 1.0)[0] == pytest.approx(
        ((r >= 0.5) & (r < 1.0)).sum() / counts[0][(r >= 0.5) & (r < 1.0)].sum())


def _smooth_model(radius: np.ndarray) -> np.ndarray:
    return 50 * (1 + (radius / 0.12) ** 2) ** -1.5 + 0.2


def test_mean_profile_of_scaled_copies_is_their_shape():
    """Images that are one profile times different brightnesses (at different R500c) share one shape:
    the fill of an image of that profile is the profile itself, to the bin interpolation."""
    radii = np.stack([radius_r500c(P, PIXEL_KPC, r500) for r500 in (300.0, 400.0, 550.0)])
    images = np.stack([k * _smooth_model(r) for k, r in zip((1.0, 3.0, 0.5), radii)])
    shape = mean_profile(images, radii)
    r = radius_r500c(P, PIXEL_KPC, R500C_KPC)
    image = 2.0 * _smooth_model(r)
    for inner, outer in ((0.0, 0.15), (0.5, 1.0)):
        inside = (r >= inner) & (r < outer)
        fill = fill_expectation(image, r, inside, shape)
        assert np.allclose(fill[inside], image[inside], rtol=0.05), (inner, outer)
        # the fill holds the image's own counts outside the region
        assert fill[~inside].sum() == pytest.approx(image[~inside].sum())
    # interpolation is flat beyond the last bin any image reached
    assert profile_at(shape, np.array([50.0])) == pytest.approx(shape[np.isfinite(shape)][-1])


def test_occlude_replaces_only_the_region_with_a_seeded_poisson_draw():
    r = radius_r500c(P, PIXEL_KPC, R500C_KPC)
    image = np.rint(1000 * _smooth_model(r))
    shape = mean_profile(image[None], r[None])
    views = np.stack([image, image.T])
    a = occlude(views, r, 0.5, 1.0, shape, np.random.default_rng(7))
    b = occlude(views, r, 0.5, 1.0, shape, np.random.default_rng(7))
    assert np.array_equal(a, b)
    inside = (r >= 0.5) & (r < 1.0)
    assert np.array_equal(a[:, ~inside], views[:, ~inside])
    assert not np.array_equal(a[:, inside], views[:, inside])
    assert (a == np.rint(a)).all() and (a >= 0).all()
    # an image of the mean profile is refilled with itself on average: the region's counts agree
    # within a few Poisson sigmas
    total = views[:, inside].sum(axis=1)
    assert np.all(np.abs(a[:, inside].sum(axis=1) - total) < 5 * np.sqrt(total) + 0.02 * total)
    # both fills of both regions, drawn in a fixed order; the own-profile fill of a round cluster is
    # the same cluster, redrawn
    regions = {"core": (0.0, 0.15), "outskirts": (0.5, 1.0)}
    # two energy bands (the second a tenth as bright), each filled from its own mean profile
    banded = np.stack([views, np.rint(0.1 * views)], axis=1)
    shapes = np.stack([shape, mean_profile(np.rint(0.1 * image)[None], r[None])])
    all_fills = occluded_views(banded, r, regions, shapes, np.random.default_rng(3))
    assert all_fills.shape == (2, 2, 2, 2, P, P)  # regions, fills, views, bands
    assert np.array_equal(all_fills, occluded_views(banded, r, regions, shapes, np.random.default_rng(3)))
    # band by band: the first band draws as a one-band image would
    assert np.array_equal(all_fills[:, :, :, :1], occluded_views(banded[:, :1], r, regions, shapes[:1],
                                                                 np.random.default_rng(3)))
    for band, counts in enumerate((total, views[:, inside].sum(axis=1) * 0.1)):
        own = all_fills[1, 1, :, band]
        assert np.array_equal(own[:, ~inside], banded[:, band][:, ~inside])
        assert np.all(np.abs(own[:, inside].sum(axis=1) - counts) < 5 * np.sqrt(counts) + 0.01 * counts)


def test_untrained_null_is_the_folds_initial_model():
    """The untrained CNN is seeded by (run.seed, fold) alone: rebuilt the same, and different per fold."""
    from hpcmass.train.fold import initial_model

    params = load_params(None)
    a, b, c = (initial_model(params, fold, 32).get_weights() for fold in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_interpret_params_refuse_overlapping_regions_and_repeated_nulls():
    from hpcmass.errors import ParamsError

    with pytest.raises(ParamsError, match="outskirts_r500c"):
        load_params(None, ["interpret.outskirts_r500c=[0.1, 1.0]"])
    with pytest.raises(ParamsError, match="nulls"):
        load_params(None, ["interpret.nulls=[log_sum, log_sum]"])
    with pytest.raises(ParamsError, match="nulls"):
        load_params(None, ["interpret.nulls=[]"])
