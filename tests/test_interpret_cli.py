"""`hpcmass interpret` under real mpirun: the same results on 1 and 2 ranks, consistent with train."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, base_env, mpirun
from tiny_run import build_tiny_run

from hpcmass.images import make_views, radius_r500c
from hpcmass.interpret.dream import MAP_VIEW, radial_edges
from hpcmass.params import load_params
from hpcmass.store import LAYOUT, Store

pytestmark = pytest.mark.mpi  # every test here runs hpcmass under real mpirun
PARAMS = ROOT / "params" / "ci.yaml"
#: Three energy bands: the interpretation of a CNN with colour (the report tests read one band).
BANDS = "observe.bands=[[0.5, 1.2], [1.2, 2.5], [2.5, 7.0]]"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny store up to train in three energy bands (built once), and copies interpreted on 1 and 2
    ranks, and on 2 ranks writing per-rank shard files (as where h5py lacks MPI)."""
    base = tmp_path_factory.mktemp("tiny") / "base"
    params = load_params(PARAMS, [BANDS])
    build_tiny_run(base, params)
    runs = {}
    for ranks, shards in ((1, False), (2, False), (2, True)):
        key = f"{ranks}s" if shards else ranks
        work = base.parent / f"ranks{key}"
        shutil.copytree(base, work)
        env = base_env(work.parent) | ({"HPCMASS_STORE_SHARDS": "1"} if shards else {})
        proc = mpirun(ranks, "-m", "hpcmass", "interpret", "--params", PARAMS, "--set", BANDS, "--workdir", work,
                      env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[key] = (work, proc)
    return params, base, runs


def test_interpretation_is_rank_count_invariant(tiny_run):
    params, _, runs = tiny_run
    with Store.read(runs[1][0]) as one, Store.read(runs[2][0]) as two, Store.read(runs["2s"][0]) as sharded:
        assert one.is_complete("interpret") and two.is_complete("interpret") and sharded.is_complete("interpret")
        assert int(two.file["interpret"].attrs["last_run_ranks"]) == 2
        assert sharded.file["interpret/profile"].is_virtual  # joined from the ranks' shard files
        # whole-stage products (the median profile) come from every rank's clusters, not rank 0's shard
        assert not sharded.file["interpret/profile_median"].is_virtual
        for name in LAYOUT["interpret"]:
            a, b, c = (s.file["interpret"][name][...] for s in (one, two, sharded))
            assert np.array_equal(a, b, equal_nan=True) and np.array_equal(a, c, equal_nan=True), name


def test_interpretation_results_are_consistent(tiny_run):
    params, _, runs = tiny_run
    ip = params.interpret
    with Store.read(runs[2][0]) as s:
        g = s.file["interpret"]
        pred = s.file["train/pred_log_m500c"][...]
        images = s.file["observe/images"][...]
        assert images.shape[1:3] == (3, 3)  # projections, energy bands
        # step 0 is the prediction train made for the same view with the same model
        assert np.allclose(g["pred_dream"][..., 0], pred, atol=1e-4)
        # iterations are meant to raise the predicted mass
        assert (g["pred_dream"][..., -1] > g["pred_dream"][..., 0]).mean() > 0.8
        assert g["profile"].shape == (10, 24, ip.iterations, ip.radial_bins)
        assert np.allclose(g.attrs["radial_edges_r500c"], radial_edges(ip))
        # the stored map is N_t - N_0 of the stored view, a non-negative whole-photon image
        dn = g["dn_map"][...]
        view0 = make_views(images)[:, MAP_VIEW].sum(axis=1)  # the maps are of all bands together
        assert (view0[:, None] + dn >= 0).all() and np.abs(dn).sum() > 0
        small = np.abs(dn) <= ip.small_change * view0[:, None]
        assert np.array_equal(g["small_change_map"][...].astype(bool), small)
        assert np.array_equal(g["off_centre"][...].astype(bool),
                              g["response_offset_r500c"][...] > ip.offcentre_r500c)
        med = g["profile_median"][...]
        assert np.isfinite(med[:, 0]).all() and med.shape == (ip.iterations, ip.radial_bins)
        # The nulls went through the same iterations. log10 sum N has one gradient for every pixel, so each
        # iteration adds one photon everywhere: its core response is known from the views alone.
        nulls = g.attrs["nulls"].split(",")
        assert nulls == list(ip.nulls) and g["null_profile"].shape == (10, len(nulls), 24, ip.iterations, ip.radial_bins)
        response = g["core_response"][...]
        assert response.shape == (10, 1 + len(nulls), 24)
        views = make_views(images).sum(axis=2).astype(float)
        r500c = s.file["catalog/r500c_kpc"][...]
        for i in range(10):
            r = radius_r500c(images.shape[-1], g.attrs["pixel_kpc"], r500c[i])
            core, out = r < ip.core_r500c, (r >= ip.outskirts_r500c[0]) & (r < ip.outskirts_r500c[1])
            known = (core.sum() / views[i][:, core].sum(axis=1)) / (out.sum() / views[i][:, out].sum(axis=1))
            assert np.allclose(response[i, 1 + nulls.index("log_sum")], known, rtol=1e-5), i
        # occlusion moved every view's prediction, each region and fill by its own draw
        dlogm = g["occlusion_dlogm"][...]
        assert dlogm.shape == (10, 24, 2, 2) and np.isfinite(dlogm).all() and (dlogm != 0).mean() > 0.9
        assert json.loads(g.attrs["regions_r500c"]) == {"core": [0.0, ip.core_r500c],
                                                        "outskirts": list(ip.outskirts_r500c)}
        assert g.attrs["occlusion_fills"] == "fold_mean,own_profile"


def test_interpret_resumes_and_refuses_an_incomplete_train(tiny_run, tmp_path):
    _, base, runs = tiny_run
    again = mpirun(1, "-m", "hpcmass", "interpret", "--params", PARAMS, "--set", BANDS, "--workdir", runs[1][0])
    assert again.returncode == 0 and "interpreting 0 of 10 clusters" in again.stderr
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    with Store.read(broken) as s:
        assert s.is_complete("train")
    import h5py

    with h5py.File(broken / "store.h5", "a") as f:
        f["train/done"][1] = 0
    proc = mpirun(1, "-m", "hpcmass", "interpret", "--params", PARAMS, "--set", BANDS, "--workdir", broken)
    assert proc.returncode == 1
    assert "the train stage has 2/3 folds done; run `hpcmass train" in proc.stderr


def test_missing_fold_model_fails_its_clusters_and_a_rerun_finishes_them(tiny_run, tmp_path):
    """A fold's model file gone: its clusters are marked failed with the reason, the others done, the
    command exits 1 with one line naming the file; with the file back a re-run finishes the stage."""
    import h5py

    from hpcmass.store import DONE, FAILED

    _, base, runs = tiny_run
    work = tmp_path / "work"
    shutil.copytree(base, work)
    models = sorted((work / "train").glob("fold_*/model.keras"))
    assert len(models) == 3, models  # ci.yaml: 3 folds, in fold order
    missing, aside = models[1], tmp_path / "model.keras"
    missing.rename(aside)
    with Store.read(work) as s:
        in_fold = s.file["dataset/fold"][...] == 1
    assert 0 < in_fold.sum() < in_fold.size

    proc = mpirun(2, "-m", "hpcmass", "interpret", "--params", PARAMS, "--set", BANDS, "--workdir", work)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcmass interpret: error:")]
    assert len(errors) == 1 and str(missing) in errors[0], proc.stderr[-3000:]
    assert f"{in_fold.sum()} cluster(s) failed" in errors[0]
    assert "Traceback" not in proc.stderr
    with h5py.File(work / "store.h5", "r") as f:
        done, reasons = f["interpret/done"][...], f["interpret/error"][...]
    np.testing.assert_array_equal(done, np.where(in_fold, FAILED, DONE))
    assert all(str(missing).encode() in r for r in reasons[in_fold]) and not reasons[~in_fold].any()

    aside.rename(missing)
    proc = mpirun(2, "-m", "hpcmass", "interpret", "--params", PARAMS, "--set", BANDS, "--workdir", work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Store.read(work) as again, Store.read(runs[2][0]) as whole:
        assert again.is_complete("interpret") and not again.file["interpret/error"][...].any()
        for name in LAYOUT["interpret"]:  # the same as an uninterrupted run, profile summary included
            a, b = again.file["interpret"][name][...], whole.file["interpret"][name][...]
            assert np.array_equal(a, b, equal_nan=True), name
