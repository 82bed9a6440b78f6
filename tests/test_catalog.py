"""The catalog stage on real files: generated cells, the TNG layout, yt, the CLI, MPI, resume, bad inputs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, hpcmass, mpirun

from hpcmass.constants import KPC_CM
from hpcmass.catalog import physics as ph
from hpcmass.catalog import tng
from hpcmass.catalog.stage import SCATTER_PROXIES, halo_selection, mass_scatter, run, synthetic_models
from hpcmass.mpi import get_logger, world
from hpcmass.params import load_params
from hpcmass.store import FAILED, Store
from hpcmass.store.readers import load_catalog

CI = ROOT / "params" / "ci.yaml"


def _params(*sets):
    return load_params(CI, list(sets))


def _generate(workdir, *sets):
    params = _params(*sets)
    run(workdir, params, world(), log=get_logger(world()))
    return params


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ci")
    params = _generate(workdir)
    return workdir, params


def _radii(path, center, box, h):
    _, gas = tng.read_gas(path, ("Coordinates", "Masses"))
    r = np.linalg.norm(tng.min_image(gas["Coordinates"] - center, box), axis=1) / h
    return r, gas["Masses"].astype(np.float64) * 1e10 / h


def test_table_cutouts_and_tng_layout(ci_run):
    workdir, params = ci_run
    with Store.read(workdir) as s:
        s.require_complete("catalog")
        cat = load_catalog(s)
        attrs = dict(s.file["catalog"].attrs)
    assert len(cat) == 10 and cat.done.all() and cat.source == "synthetic"
    assert attrs["box_size_ckpch"] == 205_000.0 and attrs["hubble"] == ph.HUBBLE and attrs["snapshot_redshift"] == 0
    assert attrs["omega_m"] == ph.OMEGA_M
    assert np.array_equal(cat.cluster_id, np.arange(10))
    assert np.all((cat.log_m500c >= 13.57) & (cat.log_m500c <= 15.06))
    np.testing.assert_allclose(cat.r500c_kpc, ph.r500_kpc(10**cat.log_m500c), rtol=1e-6)
    straddling = 0
    for i, path in enumerate(cat.cutout):
        assert path == (workdir / "catalog" / "cutouts" / f"halo_{i}.hdf5").resolve()
        assert cat.columns["cutout"][i].decode() == f"catalog/cutouts/halo_{i}.hdf5"
        with h5py.File(path, "r") as f:
            assert set(f) == {"Header", "PartType0"}
            hdr = f["Header"].attrs
            for key in ("BoxSize", "Redshift", "Time", "HubbleParam", "Omega0", "OmegaLambda", "MassTable",
                        "NumPart_ThisFile", "NumPart_Total", "NumFilesPerSnapshot"):
                assert key in hdr
            assert hdr["NumPart_ThisFile"][0] == cat.n_gas_cells[i] == f["PartType0/Masses"].shape[0]
            assert set(tng.GAS_FIELDS) <= set(f["PartType0"])
            assert f["PartType0/Coordinates"].dtype == np.float64 and f["PartType0/Density"].dtype == np.float32
            x = f["PartType0/Coordinates"][...]
            sfr = f["PartType0/StarFormationRate"][...]
        assert x.min() >= 0 and x.max() < 205_000.0
        # A cluster across a box face has cells at both ends of the box, as TNG cutouts do.
        straddling += bool(np.any((x < 5_000) & (x > -1)) and np.any(x > 200_000))
        assert 3 <= (sfr > 0).sum() < 50  # a few star-forming cells, the observe cut must drop them
        assert cat.columns["n_hot_cells"][i] <= cat.n_gas_cells[i] - (sfr > 0).sum()
    assert straddling >= 1
    assert 1e4 <= np.median(cat.n_gas_cells) and cat.n_gas_cells.max() <= params.catalog.max_gas_cells
    # One cell mass for all clusters, as in TNG: a cell's mass says nothing of its cluster's.
    cell_mass = [np.median(tng.read_gas(path, ("Masses",))[1]["Masses"]) * 1e10 / ph.HUBBLE for path in cat.cutout]
    np.testing.assert_allclose(cell_mass, params.catalog.cell_mass_msun, rtol=0.02)
    with h5py.File(tng.group_catalog_path(workdir / "catalog", 99), "r") as f:
        assert f["Header"].attrs["Ngroups_Total"] == 10
        np.testing.assert_allclose(np.log10(f["Group/Group_M_Crit500"][...] * 1e10 / ph.HUBBLE), cat.log_m500c)
        np.testing.assert_allclose(f["Group/GroupPos"][...], cat.center_ckpch, atol=0.02)


def test_m500_and_r500_measured_on_cells_match_the_catalogue(ci_run):
    """Spherical overdensity on the generated gas plus the model's dark-matter term: within 2%."""
    workdir, params = ci_run
    cat = load_catalog(workdir)
    rho_c = ph.rho_crit()
    for m, path, center, r500, logm in zip(synthetic_models(params), cat.cutout, cat.center_ckpch, cat.r500c_kpc,
                                           cat.log_m500c):
        r, mass = _radii(path, center, cat.box_size_ckpch, cat.hubble)
        order = np.argsort(r)
        grid = r500 * np.linspace(0.6, 1.6, 2001)
        gas = np.interp(grid, r[order], np.cumsum(mass[order]))
        total = gas + ph.nongas_mass(m, ph.profiles(m), grid)
        overdensity = total / (4 / 3 * np.pi * grid**3) / rho_c
        r_so = np.interp(-500.0, -overdensity, grid)  # overdensity falls with radius
        m_so = 500 * rho_c * 4 / 3 * np.pi * r_so**3
        assert r_so == pytest.approx(r500, rel=0.02)
        assert m_so == pytest.approx(10**logm, rel=0.02)
        # The gas alone carries the drawn gas fraction (sampling noise ~1/sqrt(N)).
        assert mass[r <= r500].sum() == pytest.approx(m.f_gas * m.m500, rel=0.05)


def test_cells_reproduce_the_profile_summaries(ci_run):
    """What the loader measures on the cells agrees with the gas-free summaries the statistics tests use."""
    workdir, params = ci_run
    cat = load_catalog(workdir)
    names = {"lx_ce": "lx_ce_erg_s", "lx_ci": "lx_ci_erg_s", "tx_kev": "tx_kev", "mgas500": "mgas500_msun"}
    for i, m in enumerate(synthetic_models(params)):
        s = ph.summarise(m)
        for key, col in names.items():
            assert cat.columns[col][i] == pytest.approx(s[key], rel=0.08), (i, key)
        assert cat.columns["k0_kev_cm2"][i] == pytest.approx(s["k0"], rel=0.25)
        if abs(np.log(s["k0"] / ph.K0_COOL_CORE)) > 0.25:  # clear of the threshold
            assert cat.columns["cool_core"][i] == (s["k0"] < ph.K0_COOL_CORE)


def test_mass_scatter_is_the_power_law_rms_with_an_interval(ci_run):
    workdir, params = ci_run
    cat = load_catalog(workdir)
    scatter = mass_scatter(workdir, 200, 1)
    assert list(scatter) == [label for _, label in SCATTER_PROXIES]
    for key, label in SCATTER_PROXIES:
        x, y = np.log(cat.columns[key]), np.log(10**cat.log_m500c)
        resid = y - np.polyval(np.polyfit(x, y, 1), x)
        value, lo, hi = scatter[label]
        assert value == pytest.approx(np.sqrt(np.sum(resid**2) / (len(y) - 2)), rel=1e-9)
        assert lo < value < hi


def test_same_seed_same_bytes_and_cluster_k_independent_of_sample_size(ci_run, tmp_path):
    workdir, _ = ci_run
    cut = workdir / "catalog" / "cutouts"
    _generate(tmp_path / "again")
    _generate(tmp_path / "bigger", "catalog.n_clusters=12", "catalog.max_gas_cells=200000")
    _generate(tmp_path / "other", "run.seed=7", "catalog.max_gas_cells=200000")
    for i in range(10):
        ref = _digest(cut / f"halo_{i}.hdf5")
        assert _digest(tmp_path / "again" / "catalog" / "cutouts" / f"halo_{i}.hdf5") == ref
        assert _digest(tmp_path / "bigger" / "catalog" / "cutouts" / f"halo_{i}.hdf5") == ref
        assert _digest(tmp_path / "other" / "catalog" / "cutouts" / f"halo_{i}.hdf5") != ref
    groups = tng.group_catalog_path(workdir / "catalog", 99)
    assert _digest(tng.group_catalog_path(tmp_path / "again" / "catalog", 99)) == _digest(groups)
    a, b = load_catalog(workdir), load_catalog(tmp_path / "bigger")
    assert np.array_equal(a.log_m500c, b.log_m500c[:10]) and np.array_equal(a.center_ckpch, b.center_ckpch[:10])


def test_yt_opens_a_cutout_as_arepo_with_the_generators_temperature(ci_run):
    yt = pytest.importorskip("yt")
    workdir, _ = ci_run
    cat = load_catalog(workdir)
    i = int(np.argmax([c[2] < 1_000 or c[2] > 204_000 for c in cat.center_ckpch]))  # an edge cluster if any
    ds = yt.load(str(cat.cutout[i]))
    assert type(ds).__name__ == "ArepoHDF5Dataset" and ds.cosmological_simulation
    assert ("gas", "emission_measure") in ds.derived_field_list
    ad = ds.all_data()
    _, gas = tng.read_gas(cat.cutout[i])
    state = tng.gas_state(gas, cat.hubble, 1.0)
    np.testing.assert_allclose(ad["gas", "temperature"].to_value("K") / 1.160451812e7, state["kt"], rtol=2e-3)
    em = state["ne"] * state["nh"] * state["mass"] / state["rho"] * KPC_CM**3
    np.testing.assert_allclose(ad["gas", "emission_measure"].to_value("cm**-3"), em, rtol=3e-3)
    np.testing.assert_allclose(ad["gas", "mass"].to_value("Msun").sum(), state["mass"].sum(), rtol=1e-3)


@pytest.mark.mpi
def test_two_ranks_split_the_work_and_match_one(ci_run, tmp_path, env):
    workdir, _ = ci_run
    proc = mpirun(2, "-m", "hpcmass", "catalog", "--params", CI, "--workdir", tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    with Store.read(tmp_path) as s:
        assert int(s.file["catalog"].attrs["last_run_ranks"]) == 2
    for i in range(10):
        name = f"catalog/cutouts/halo_{i}.hdf5"
        assert _digest(tmp_path / name) == _digest(workdir / name)
    a, b = load_catalog(workdir), load_catalog(tmp_path)
    for col in a.columns:
        np.testing.assert_array_equal(a.columns[col], b.columns[col])


def test_resume_regenerates_only_what_is_not_done(tmp_path):
    _generate(tmp_path)
    cut = tmp_path / "catalog" / "cutouts"
    before = {p.name: (p.stat().st_mtime_ns, _digest(p)) for p in cut.iterdir()}
    with h5py.File(tmp_path / "store.h5", "r+") as f:
        f["catalog/done"][4] = 0
    (cut / "halo_4.hdf5").unlink()
    _generate(tmp_path)
    after = {p.name: (p.stat().st_mtime_ns, _digest(p)) for p in cut.iterdir()}
    assert after.keys() == before.keys()
    for name in before:
        assert after[name][1] == before[name][1]
        assert (after[name][0] == before[name][0]) == (name != "halo_4.hdf5")


def _tng_copy(ci_workdir, dest):
    shutil.copytree(ci_workdir / "catalog", dest)
    return dest


def test_tng_source_reads_the_same_files_and_reports_bad_clusters(ci_run, tmp_path, env):
    workdir, _ = ci_run
    tng_dir = _tng_copy(workdir, tmp_path / "tng")
    cut = tng_dir / "cutouts"
    data = (cut / "halo_1.hdf5").read_bytes()
    (cut / "halo_1.hdf5").write_bytes(data[: len(data) // 2])
    with h5py.File(cut / "halo_2.hdf5", "r+") as f:
        del f["PartType0/Density"]
    with h5py.File(cut / "halo_3.hdf5", "r+") as f:
        f["PartType0/InternalEnergy"][...] *= 47.5  # Kelvin instead of (km/s)^2
    with h5py.File(cut / "halo_5.hdf5", "r+") as f:
        f["PartType0/InternalEnergy"][...] = 10.0  # ~500 K: no hot gas
    (cut / "halo_6.hdf5").unlink()
    sets = ["--set", "catalog.source=tng300", "--set", f"catalog.tng_dir={tng_dir}"]
    proc = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "run", *sets, env=env)
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert "5 of 10 clusters failed" in err[0] and "cluster 1: halo 1:" in err[0]
    with Store.read(tmp_path / "run") as s:
        done, why = s.file["catalog/done"][...], [e.decode() for e in s.file["catalog/error"][...]]
        ref = load_catalog(workdir)
        got = load_catalog(s)
    assert list(np.flatnonzero(done == FAILED)) == [1, 2, 3, 5, 6]
    assert "truncated" in why[1] and "lacks Density" in why[2] and "InternalEnergy" in why[3]
    assert "no hot gas" in why[5] and "cutout missing" in why[6]
    ok = done == 1
    for col in ("cluster_id", "log_m500c", "r500c_kpc", "center_ckpch", "n_gas_cells", "lx_ce_erg_s", "tx_kev"):
        np.testing.assert_array_equal(got.columns[col][ok], ref.columns[col][ok])
    assert got.source == "tng300"
    assert got.cutout[0] == (tng_dir / "cutouts" / "halo_0.hdf5").resolve()


def test_bad_catalog_inputs_give_one_line(tmp_path, env):
    cases = [
        (["catalog.source=tng300", f"catalog.tng_dir={tmp_path / 'nowhere'}"], 1, "no such directory"),
        (["catalog.source=tng300"], 2, "catalog.tng_dir"),
        (["catalog.source=tng300", f"catalog.tng_dir={tmp_path}"], 1, "no group catalogue"),
        (["catalog.cell_mass_msun=-1"], 2, "catalog.cell_mass_msun"),
        # One cell mass for all: the biggest CI cluster needs ~56,000 cells of 5e8 Msun.
        (["catalog.max_gas_cells=20000"], 2, "catalog.max_gas_cells >= 56"),
        (["catalog.generator=lumpy"], 2, "catalog.generator"),
        (["catalog.selection=fof"], 2, "catalog.selection"),
    ]
    for sets, code, text in cases:
        args = [a for s in sets for a in ("--set", s)]
        proc = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "w", *args, env=env)
        assert proc.returncode == code, (sets, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and text in lines[0], (sets, proc.stderr)


def test_tng_selection_rules_count_and_choose_the_haloes(ci_run, tmp_path, env):
    """A rule other than the M500c range selects by M200c (or FoF mass); the stage prints every
    rule's count and, when the sample size is not the params', names them all."""
    workdir, params = ci_run
    tng_dir = _tng_copy(workdir, tmp_path / "tng")
    log_m200 = np.sort(np.log10([ph.m200c(m) for m in synthetic_models(params)]))
    threshold = float(0.5 * (log_m200[4] + log_m200[5]))  # the 5 heaviest in M200c
    sets = ["catalog.source=tng300", f"catalog.tng_dir={tng_dir}", "catalog.selection=m200c",
            f"catalog.selection_log_min={threshold}"]
    selection, candidates = halo_selection(_params(*sets))
    inputs = tng.open_inputs(tng_dir, 99, selection, candidates)
    heaviest = np.argsort([ph.m200c(m) for m in synthetic_models(params)])[5:]
    assert np.array_equal(inputs.group_id, np.sort(heaviest))
    with h5py.File(tng.group_catalog_path(tng_dir, 99), "r") as f:
        log_fof = np.log10(f["Group/GroupMass"][...].astype(float) * 1e10 / ph.HUBBLE)
    assert list(inputs.counts.values()) == [10, 5, int(np.sum(log_fof >= threshold))]
    args = [a for s in sets for a in ("--set", s)]
    proc = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "run", *args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"5 haloes with log10 M200c >= {threshold:g}" in proc.stderr and "set catalog.n_clusters=5" in proc.stderr
    assert f"10 haloes with 13.57 <= log10 M500c <= 15.06; 5 with log10 M200c >= {threshold:g}" in proc.stderr
    proc = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "run", *args, "--set", "catalog.n_clusters=5",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(load_catalog(tmp_path / "run").cluster_id, np.sort(heaviest))


def test_m200c_is_colossus_conversion_of_the_nfw_halo(ci_run):
    from colossus.halo import mass_defs

    _, params = ci_run
    for m in synthetic_models(params)[:4]:
        m200, _, _ = mass_defs.changeMassDefinition(m.m500 * ph.HUBBLE, m.c500, 0.0, "500c", "200c")
        assert ph.m200c(m) == pytest.approx(m200 / ph.HUBBLE, rel=1e-4)
        assert 0.6 < m.m500 / ph.m200c(m) < 0.8  # FACTS: M500/M200 0.65-0.74 for c200c 3-6


def test_wrong_cluster_count_names_the_right_setting(ci_run, tmp_path, env):
    workdir, _ = ci_run
    tng_dir = _tng_copy(workdir, tmp_path / "tng")
    proc = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "w", "--set", "catalog.source=tng300",
                   "--set", f"catalog.tng_dir={tng_dir}", "--set", "catalog.n_clusters=12", env=env)
    assert proc.returncode == 2 and "set catalog.n_clusters=10" in proc.stderr
