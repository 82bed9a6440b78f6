"""Dataset stage: the 24 views, mass-cyclic folds, input scaling, the tf.data pipeline, `hpcmass dataset`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import hpcmass
from toy_clusters import toy_images, write_toy_store

from hpcmass.dataset.folds import assign_folds, split
from hpcmass.train.pipeline import ViewSource, epoch_order, view_ids
from hpcmass.train.scaling import METHODS, scale_images
from hpcmass.images import N_VIEWS, VIEWS_PER_AXIS, make_views, view_operations
from hpcmass.errors import StageError
from hpcmass.mpi import world
from hpcmass.params import load_params
from hpcmass.store import DONE, Store

tf = pytest.importorskip("tensorflow")


def _asymmetric(n_axes=3, pixels=6, seed=0, bands=1):
    """Projections (axes, bands, P, P) with no symmetry at all: every one of the 8 square symmetries gives a
    new image."""
    n = n_axes * bands * pixels * pixels
    return np.random.default_rng(seed).permutation(n).reshape(n_axes, bands, pixels, pixels)


# --- views ---------------------------------------------------------------------------------------


def test_24_distinct_views_in_the_documented_order():
    proj = _asymmetric(bands=2)
    views = make_views(proj)
    assert views.shape == (N_VIEWS, 2, 6, 6) and N_VIEWS == 3 * VIEWS_PER_AXIS == 24
    assert len({v.tobytes() for v in views}) == 24
    for axis in range(3):
        for flip in (0, 1):
            for k in range(4):
                for band in range(2):  # every band of a view turned alike
                    image = proj[axis, band]
                    expected = np.rot90(np.fliplr(image) if flip else image, k)
                    np.testing.assert_array_equal(views[8 * axis + 4 * flip + k, band], expected)


def test_views_are_the_square_symmetry_group():
    proj = _asymmetric(n_axes=1)[0, 0]
    views = {v.tobytes() for v in make_views(proj[None, None])}
    # The paper's "reflections along the vertical and horizontal axes" and the transposes are all in it...
    for other in (np.flipud(proj), np.fliplr(proj), proj.T, np.rot90(proj.T), np.flipud(np.fliplr(proj))):
        assert other.tobytes() in views
    # ...and it is closed: a view of a view is a view.
    for v in make_views(proj[None, None]):
        assert {w.tobytes() for w in make_views(v[None])} == views


def test_views_numpy_tensorflow_operations_and_leading_dims_agree():
    proj = _asymmetric(n_axes=2, pixels=5)
    batch = np.stack([proj, proj + 100])
    np_views = make_views(batch)
    assert np_views.shape == (2, 16, 1, 5, 5)
    np.testing.assert_array_equal(make_views(tf.constant(batch)).numpy(), np_views)
    ops = view_operations()
    assert ops.shape == (8, 3) and len({tuple(o) for o in ops}) == 8  # all 8 combinations, once each
    for d, (cols, rows, transpose) in enumerate(ops):
        m = proj[1, 0][:, ::-1] if cols else proj[1, 0]
        m = m[::-1] if rows else m
        np.testing.assert_array_equal(m.T if transpose else m, np_views[0, 8 + d, 0])
    with pytest.raises(ValueError, match="square"):
        make_views(np.zeros((3, 1, 4, 5)))
    with pytest.raises(ValueError, match="bands"):
        make_views(np.zeros((3, 5, 5)))  # no band axis


@pytest.mark.parametrize("bands", [1, 3])
def test_pipeline_batches_are_the_views_of_their_ids(bands):
    images, log_m = toy_images(5, pixels=24, seed=1, bands=bands)
    src = ViewSource(images, log_m)
    assert (src.n_views, src.image_shape) == (24, (bands, 24, 24))
    ids = epoch_order(view_ids(np.arange(5), 24), seed=3, fold=0, epoch=1)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in src.dataset(ids, batch_size=7)])
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    every = make_views(images).reshape(5 * 24, bands, 24, 24)
    np.testing.assert_array_equal(xs, every[ids])
    np.testing.assert_allclose(ys, log_m[ids // 24], rtol=1e-6)
    assert xs.dtype == np.float32 and [len(x) for x, _ in src.dataset(ids, 7)][-1] == 120 % 7
    np.testing.assert_array_equal(src.views([3, 1]), every[np.r_[72:96, 24:48]])


def test_images_of_other_exposures_are_scaled_to_the_reference_and_batched_unrounded():
    from dataclasses import replace

    from hpcmass.images import at_exposure
    from hpcmass.store.readers import Observations

    counts = np.random.default_rng(2).poisson(3.0, (4, 3, 2, 8, 8)).astype(np.int32)
    view_ks = np.tile([25.0, 50.0, 100.0], (4, 1))  # each cluster's three projections
    scaled = at_exposure(counts, view_ks, 50.0)
    assert scaled.dtype == np.float32 and scaled.shape == counts.shape
    np.testing.assert_array_equal(scaled[:, 0], 2 * counts[:, 0])
    np.testing.assert_array_equal(scaled[:, 1], counts[:, 1])
    np.testing.assert_array_equal(scaled[:, 2], counts[:, 2] / 2)
    obs = Observations(counts=counts, bands_kev=((0.5, 1.2), (1.2, 7.0)), axes=("x", "y", "z"), pixel_arcsec=9.4,
                       pixel_kpc=9.5, redshift=0.05, exposure_ks=50.0, data_mode="approximate", attrs={},
                       view_exposure_ks=view_ks)
    np.testing.assert_array_equal(obs.network_input, scaled)
    assert replace(obs, view_exposure_ks=None).network_input is counts  # one exposure: the counts themselves
    # the pipeline keeps the half counts of the 100 ks projections: views of the scaled images, not rounded
    x, _ = next(iter(ViewSource(scaled, np.zeros(4)).dataset(view_ids([0], 24), 24)))
    np.testing.assert_array_equal(x.numpy(), make_views(scaled[:1]).reshape(24, 2, 8, 8))


def test_epoch_order_is_a_seeded_shuffle_dealt_evenly_to_ranks():
    ids = view_ids(np.array([0, 2, 5]), 24)
    a = epoch_order(ids, 7, fold=1, epoch=3)
    assert sorted(a) == sorted(ids) and not np.array_equal(a, np.sort(a))
    np.testing.assert_array_equal(a, epoch_order(ids, 7, fold=1, epoch=3))  # resumable: depends on the epoch only
    assert not np.array_equal(a, epoch_order(ids, 7, fold=1, epoch=4))
    assert not np.array_equal(a, epoch_order(ids, 7, fold=2, epoch=3))
    shards = [epoch_order(ids, 7, 1, 3, rank=r, size=5) for r in range(5)]
    assert {len(s) for s in shards} == {72 // 5}  # same number of steps on every rank
    joined = np.concatenate(shards)
    assert len(set(joined)) == joined.size and set(joined) <= set(ids)


# --- folds ---------------------------------------------------------------------------------------


def test_folds_are_mass_sorted_and_cyclic():
    log_m = np.random.default_rng(2).uniform(13.6, 15.0, 53)
    folds = assign_folds(log_m, 10)
    assert folds.dtype == np.int16
    np.testing.assert_array_equal(folds[np.argsort(log_m)], np.arange(53) % 10)
    counts = np.bincount(folds)
    assert counts.max() - counts.min() <= 1
    # Every fold spans the mass range: same mass function within one cyclic step.
    for k in range(10):
        m = np.sort(log_m[folds == k])
        assert m[0] < np.sort(log_m)[10] and m[-1] > np.sort(log_m)[-11]


def test_no_cluster_crosses_sets():
    log_m = np.random.default_rng(3).uniform(13.6, 15.0, 41)
    folds = assign_folds(log_m, 10)
    tested = []
    for k in range(10):
        train, val, test = split(folds, k, 10)
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert sorted(np.concatenate([train, val, test])) == list(range(41))
        assert set(folds[test]) == {k} and set(folds[val]) == {(k + 1) % 10}
        # At the level of the views the pipeline feeds: view ids map back to disjoint cluster sets.
        sets = [set(view_ids(c, N_VIEWS) // N_VIEWS) for c in (train, val, test)]
        assert sets == [set(train), set(val), set(test)]
        tested.extend(test)
    assert sorted(tested) == list(range(41))  # every cluster is tested exactly once over the folds
    with pytest.raises(ValueError, match="out of range"):
        split(folds, 10, 10)


def test_fold_assignment_bad_inputs():
    with pytest.raises(StageError, match=r"4 clusters are too few for 10 folds: at least 10 are needed"):
        assign_folds([14.0, 14.1, 14.2, 14.3], 10)
    with pytest.raises(StageError, match=r"not finite for cluster\(s\) \[1\]"):
        assign_folds([14.0, np.nan, 14.2, 14.3], 3)


# --- scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_scaling_numpy_and_tensorflow_agree(method):
    counts = np.array([[0, 1, 7], [150, 3000, 2]], dtype=np.int32)
    out = scale_images(counts, method)
    assert out.dtype == np.float32 and out[0, 0] == 0.0
    np.testing.assert_allclose(scale_images(tf.constant(counts), method).numpy(), out, rtol=1e-6)
    expected = {"none": counts, "log1p": np.log1p(counts), "asinh": np.arcsinh(counts)}[method]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    x = tf.Variable(tf.cast(counts, tf.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(scale_images(x, method))
    assert np.isfinite(tape.gradient(y, x).numpy()).all()  # finite at zero counts too
    with pytest.raises(ValueError, match="unknown scaling 'sqrt'"):
        scale_images(counts, "sqrt")


# --- the stage -----------------------------------------------------------------------------------


def test_dataset_stage_writes_folds(tmp_path, env):
    params = load_params("params/ci.yaml")
    images, log_m = toy_images(10, pixels=24, seed=4)
    write_toy_store(tmp_path, params, images, log_m)
    proc = hpcmass("dataset", "--params", "params/ci.yaml", "--workdir", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "10 clusters in 3 folds, 24 views each" in proc.stderr
    with Store.read(tmp_path) as s:
        s.require_complete("dataset")
        g = s.file["dataset"]
        np.testing.assert_array_equal(g["fold"][...], assign_folds(log_m, 3))
        assert (g["done"][...] == DONE).all() and g.attrs["unit"] == "cluster" and g.attrs["n_folds"] == 3
        assert "8*axis + 4*flip + k" in g.attrs["view_order"]


def test_dataset_stage_bad_inputs(tmp_path, env):
    params = load_params("params/ci.yaml")
    images, log_m = toy_images(2, pixels=24, seed=5)
    with Store.open_stage(tmp_path, params, "catalog", world(), n_units=2, unit="cluster") as st:
        st.require("log_m500c")[...] = log_m
        st.mark_done(0)
        st.mark_done(1)
    proc = hpcmass("dataset", "--params", "params/ci.yaml", "--workdir", tmp_path, env=env)
    assert proc.returncode == 1
    assert "the observe stage has not been run; run `hpcmass observe --params params/ci.yaml`" in proc.stderr
    write_toy_store(tmp_path, params, images, log_m)  # 2 clusters in the store, 3 folds wanted
    proc = hpcmass("dataset", "--params", "params/ci.yaml", "--workdir", tmp_path, env=env)
    assert proc.returncode == 1 and "2 clusters are too few for 3 folds: at least 3 are needed" in proc.stderr
    assert "Traceback" not in proc.stderr
