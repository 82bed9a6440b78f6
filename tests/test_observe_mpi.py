"""``hpcmass observe`` as users run it: real mpirun, the catalog stage's clusters, resume, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import base_env, hpcmass, mpirun

SETS = ["--set", "catalog.n_clusters=3", "--set", "catalog.cell_mass_msun=2e9"]  # <= 15,000 cells each
ARGS = ["--params", "params/ci.yaml", *SETS]


@pytest.fixture(scope="module")
def catalog_workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("observe-catalog")
    env = base_env(wd)
    proc = hpcmass("catalog", *ARGS, "--workdir", wd, env=env)
    assert proc.returncode == 0, proc.stderr
    return wd


def hermetic_env(tmp_path: Path) -> dict:
    """A private HOME and XDG_CONFIG_HOME: neither may receive a soxs.cfg (SOXS writes one on import)."""
    return {**base_env(tmp_path), "HOME": str(tmp_path / "home")}


def no_soxs_config_written(tmp_path: Path) -> bool:
    return not list(tmp_path.rglob("soxs.cfg"))


def copy_of(catalog_workdir: Path, dest: Path) -> Path:
    shutil.copytree(catalog_workdir, dest, ignore=shutil.ignore_patterns("xdg"))
    return dest


def images(workdir: Path) -> np.ndarray:
    with h5py.File(workdir / "store.h5", "r") as f:
        assert f["observe/done"][...].tolist() == [1, 1, 1]
        return f["observe/images"][...]


@pytest.fixture(scope="module")
def serial_run(catalog_workdir, tmp_path_factory):
    wd = copy_of(catalog_workdir, tmp_path_factory.mktemp("serial") / "wd")
    proc = mpirun(1, "-m", "hpcmass", "observe", *ARGS, "--workdir", wd, env=base_env(wd))
    assert proc.returncode == 0, proc.stderr
    return wd


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_images_identical_at_any_rank_count(serial_run, catalog_workdir, tmp_path, ranks):
    wd = copy_of(catalog_workdir, tmp_path / "wd")
    proc = mpirun(ranks, "-m", "hpcmass", "observe", *ARGS, "--workdir", wd, env=hermetic_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert no_soxs_config_written(tmp_path)
    reference = images(serial_run)
    assert reference.shape == (3, 3, 1, 32, 32) and reference.sum() > 0  # clusters, axes, bands, pixels, pixels
    assert np.array_equal(images(wd), reference)
    with h5py.File(wd / "store.h5", "r") as f:
        attrs = f["observe"].attrs
        assert attrs["data_mode"] == "approximate" and attrs["last_run_ranks"] == ranks
        assert attrs["axes"] == "x,y,z" and attrs["exposure_ks"] == 10.0 and attrs["redshift"] == 0.05
        assert attrs["pixel_arcsec"] == pytest.approx(37.5)
        assert attrs["pixel_kpc"] == pytest.approx(37.5 * 1.0097, rel=0.01)  # 1.01 kpc/" at z=0.05, TNG cosmology
        assert (f["observe/n_photons"][...] > 0).all() and (f["observe/seconds"][...] > 0).all()
    status = hpcmass("status", "--workdir", wd, env=base_env(tmp_path))
    assert "observe" in status.stdout and "3/3" in status.stdout.split("observe")[1].splitlines()[0]


REALISTIC = ["--set", "observe.chips=acisi", "--set", "observe.dither=true", "--set", "observe.random_roll=true",
             "--set", "observe.pointing_offset_arcmin=1", "--set", "observe.point_sources=true",
             "--set", "observe.exposure_range_ks=[5, 10]"]


@pytest.mark.mpi
def test_realistic_mocks_are_seeded_per_view_identical_at_any_rank_count(serial_run, catalog_workdir, tmp_path):
    runs, maps, exposures = [], [], []
    for ranks in (1, 2):
        wd = copy_of(catalog_workdir, tmp_path / f"wd{ranks}")
        proc = mpirun(ranks, "-m", "hpcmass", "observe", *ARGS, *REALISTIC, "--workdir", wd, env=base_env(tmp_path))
        assert proc.returncode == 0, proc.stderr
        runs.append(images(wd))
        with h5py.File(wd / "store.h5", "r") as f:
            maps.append(f["observe/exposure"][...])
            exposures.append(f["observe/view_exposure_ks"][...])
    assert np.array_equal(*runs) and np.array_equal(*maps) and np.array_equal(*exposures)
    # each view its own exposure in the range, 3 clusters x 3 axes
    assert exposures[0].shape == (3, 3) and ((5 <= exposures[0]) & (exposures[0] <= 10)).all()
    assert np.unique(exposures[0]).size == 9
    with h5py.File(wd / "store.h5", "r") as f:
        attrs = f["observe"].attrs
        assert (attrs["random_roll"], attrs["pointing_offset_arcmin"], attrs["point_sources"]) == (True, 1.0, True)
        assert list(attrs["exposure_range_ks"]) == [5.0, 10.0]
        spec = json.loads(attrs["instrument"])
        assert len(spec["chips"]) == 4 and spec["dither"] is True
    with h5py.File(serial_run / "store.h5", "r") as f:
        # the paper's square chip fills the field for its one exposure: no map, no exposure per view
        assert "exposure" not in f["observe"] and "view_exposure_ks" not in f["observe"]
    # Every view leaves corners of the 20' field off the chips, each at its own roll: no two footprints alike,
    # and the exposure map says where (a count off the chips is a point source's PSF wing, at most).
    counts, seen = runs[0][:, :, 0].reshape(9, -1), maps[0].reshape(9, -1)
    off = seen < 0.01  # SOXS's FFT leaves ringing of up to ~1e-3 beside the chips
    assert seen.shape == (9, 32 * 32) and (off.sum(axis=1) > 0.15 * 32 * 32).all()
    assert len({o.tobytes() for o in off}) == 9
    assert counts[off].sum() < 1e-3 * counts.sum()
    assert (images(serial_run)[:, :, 0] == 0).mean() < 0.01
    # The report's L_X background for such mocks: blank-sky mocks through the same instrument, above SOXS's
    # particle background (2.39e-3 counts/s/arcmin^2, FACTS.md: 9.3 a pixel here) by the point sources'; the
    # paper's mocks give the particle level itself (4 fields: 0.5% Poisson noise). Both per 10 ks: the
    # realistic fields' 5-10 ks exposures are scaled to it.
    from hpcmass.params import load_params
    from hpcmass.report.build import sky_background_levels

    params_file, sets = Path(__file__).parents[1] / "params/ci.yaml", [s for s in SETS + REALISTIC if s != "--set"]
    particle = 2.39e-3 * 10e3 * (37.5 / 60.0) ** 2
    paper = sky_background_levels(serial_run, load_params(params_file, sets[:2]), n=4)
    realistic = sky_background_levels(wd, load_params(params_file, sets), n=4)
    assert np.mean(paper) == pytest.approx(particle, rel=0.03)
    assert 1.03 < np.mean(realistic) / np.mean(paper) < 1.4


def _descendants(pid: int) -> list[int]:
    """The process tree under ``pid`` (mpirun's daemons and ranks), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@pytest.mark.mpi
def test_sigkill_mid_cluster_then_rerun_equals_uninterrupted(serial_run, catalog_workdir, tmp_path):
    wd = copy_of(catalog_workdir, tmp_path / "wd")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**base_env(tmp_path), "TMPDIR": str(scratch)}
    cmd = ["mpirun", "-n", "2", "-x", "PYTHONPATH", "-x", "TMPDIR", sys.executable, "-m", "hpcmass", "observe",
           *ARGS, "--workdir", str(wd)]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Ranks work in scratch/hpcmass-observe-r*/cluster<id>/: a third cluster directory means one cluster
    # is finished and another is in progress. Kill everything then, mid-cluster.
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while len(seen) < 3 and proc.poll() is None and time.monotonic() < deadline:
        seen |= {p.name for p in scratch.glob("hpcmass-observe-r*/cluster*")}
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-cluster"
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    with h5py.File(wd / "store.h5", "r") as f:
        done_before = int((f["observe/done"][...] == 1).sum())
    assert done_before < 3
    rerun = mpirun(2, "-m", "hpcmass", "observe", *ARGS, "--workdir", wd, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"observing {3 - done_before} of 3 clusters" in rerun.stderr
    assert "removing stale lock" in rerun.stderr
    assert np.array_equal(images(wd), images(serial_run))


@pytest.mark.mpi
def test_a_failing_cluster_is_recorded_and_the_others_go_on(serial_run, catalog_workdir, tmp_path):
    wd = copy_of(catalog_workdir, tmp_path / "wd")
    with h5py.File(wd / "store.h5", "r") as f:
        cutout = wd / f["catalog/cutout"][1].decode()
        cluster_id = int(f["catalog/cluster_id"][1])
    cutout.write_bytes(b"not an HDF5 file")
    proc = mpirun(2, "-m", "hpcmass", "observe", *ARGS, "--workdir", wd, env=base_env(tmp_path))
    assert proc.returncode == 1
    # one error line (rank 0's; mpirun adds its own banner about the exit code after it)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcmass observe: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("hpcmass observe: error: 1 of 3 clusters failed (cluster ")
    assert f"cluster {cluster_id}: YTUnidentifiedDataType" in errors[0] and "re-run the same command" in errors[0]
    with h5py.File(wd / "store.h5", "r") as f:
        assert f["observe/done"][...].tolist() == [1, -1, 1]
        assert f["observe/error"][1].decode()
    shutil.copy(catalog_workdir / cutout.relative_to(wd), cutout)
    proc = mpirun(1, "-m", "hpcmass", "observe", *ARGS, "--workdir", wd, env=base_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "observing 1 of 3 clusters" in proc.stderr
    assert np.array_equal(images(wd), images(serial_run))


def test_real_data_demanded_but_not_staged_names_stage_data(catalog_workdir, tmp_path):
    wd = copy_of(catalog_workdir, tmp_path / "wd")
    for setting in ("observe.data=soxs", "observe.foreground=true", "observe.absorb_model=tbabs",
                    "observe.instrument=chandra_acisi_cy22"):
        proc = hpcmass("observe", *ARGS, "--workdir", wd, "--set", setting, "--set",
                       f"observe.data_dir={tmp_path / 'none'}", env=base_env(tmp_path))
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("hpcmass observe: error: " + setting) and "`hpcmass stage-data`" in lines[-1]
    assert not (wd / "observe").exists()


def test_stage_data_uses_soxs_downloader_and_fails_clearly_offline(tmp_path):
    proc = hpcmass("stage-data", "--params", "params/ci.yaml", "--workdir", tmp_path / "wd", "--set",
                   f"observe.data_dir={tmp_path / 'data'}", env=hermetic_env(tmp_path))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hpcmass stage-data: error: could not download apec_v3.1.3_coco.fits from SOXS's data")
    assert "needs network access" in last
    assert no_soxs_config_written(tmp_path)
    proc = hpcmass("stage-data", "--params", "params/ci.yaml", "--workdir", tmp_path / "wd", "--set",
                   f"observe.data_dir={tmp_path / 'data'}", "--set", "observe.instrument=chandra_hrc", env=hermetic_env(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "hpcmass stage-data: error: observe.instrument=chandra_hrc: not in SOXS 5.3.0's registry; expected simple_acisi")
    assert no_soxs_config_written(tmp_path)
