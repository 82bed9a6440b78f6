"""Store: provenance, done flags, resume, params mismatch, restart, writer lock, truncated files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpcmass.errors import StageError, StoreError
from hpcmass.mpi import world
from hpcmass.params import load_params
from hpcmass.store import DONE, FAILED, LAYOUT_VERSION, Store, status, store_path


def _params(*sets):
    return load_params(None, ["catalog.n_clusters=12", "dataset.n_folds=3", *sets])


def _write_catalog(workdir, params, units, **kw):
    with Store.open_stage(workdir, params, "catalog", world(), n_units=12, unit="cluster", **kw) as st:
        ds = st.require("log_m500c")
        for i in units:
            ds[i] = 14.0 + i / 100
            st.mark_done(i)
        return st.pending()


def test_done_flags_resume_and_provenance(tmp_path):
    p = _params()
    assert _write_catalog(tmp_path, p, range(5)) == list(range(5, 12))
    assert _write_catalog(tmp_path, p, [5, 6]) == list(range(7, 12))
    with Store.read(tmp_path) as s:
        g = s.file["catalog"]
        assert list(g["done"][...]) == [DONE] * 7 + [0] * 5
        np.testing.assert_allclose(g["log_m500c"][:7], 14.0 + np.arange(7) / 100)
        assert g.attrs["params_hash"] == p.stage_hash("catalog")
        assert int(g.attrs["seed"]) == p.run.seed
        versions = json.loads(g.attrs["versions"])
        assert versions["h5py"] and versions["mpi"] and versions["hdf5"]
        assert "n_clusters: 12" in g.attrs["params_yaml"]
        assert int(g.attrs["n_runs"]) == 2 and int(g.attrs["last_run_ranks"]) == 1
        assert g.attrs["git_commit"]
        assert s.stage_state("catalog")["done"] == 7
        with pytest.raises(StageError, match=r"catalog stage has 7/12 clusters done; run `hpcmass catalog"):
            s.require_complete("catalog")
        with pytest.raises(StageError, match="observe stage has not been run"):
            s.require_complete("observe")
    assert (tmp_path / "params.resolved.yaml").read_text() == p.to_yaml()
    st = status(tmp_path)
    assert st["stages"]["catalog"]["done"] == 7 and st["stages"]["observe"] is None


def test_failed_unit_keeps_reason_and_is_retried(tmp_path):
    p = _params()
    with Store.open_stage(tmp_path, p, "catalog", world(), n_units=12, unit="cluster") as st:
        st.mark_failed(3, "cutout missing: x.hdf5")
        assert st.summary()["failed"] == {3: "cutout missing: x.hdf5"}
        assert 3 in st.pending()
    assert status(tmp_path)["stages"]["catalog"]["failed"] == 1
    with Store.read(tmp_path) as s:
        assert s.file["catalog/done"][3] == FAILED


def test_changed_params_are_refused_with_the_changed_key(tmp_path):
    _write_catalog(tmp_path, _params(), range(12))
    other = _params("catalog.log_m500c_min=13.8")
    with pytest.raises(StoreError, match=r"catalog stage was made with other params \(catalog.log_m500c_min: "
                                         r"13.57 -> 13.8\); re-run with --restart-from catalog"):
        _write_catalog(tmp_path, other, [])
    # Downstream-only changes do not touch the catalog stage.
    _write_catalog(tmp_path, _params("train.batch_size=4"), [])
    assert _write_catalog(tmp_path, other, [0], restart_from="catalog") == list(range(1, 12))


def test_restart_from_drops_later_stages(tmp_path):
    p = _params()
    _write_catalog(tmp_path, p, range(12))
    with Store.open_stage(tmp_path, p, "observe", world(), n_units=12, unit="cluster") as st:
        st.require("images", axes=3, bands=1, pixels=8)
    with Store.open_stage(tmp_path, p, "observe", world(), n_units=12, unit="cluster", restart_from="observe") as st:
        assert "images" not in st.group
    _write_catalog(tmp_path, p, [], restart_from="catalog")
    assert status(tmp_path)["stages"]["observe"] is None


def test_a_store_of_another_layout_version_is_refused_in_one_line(tmp_path):
    import h5py

    p = _params()
    _write_catalog(tmp_path, p, range(12))
    with h5py.File(store_path(tmp_path), "a") as f:
        assert int(f.attrs["layout_version"]) == LAYOUT_VERSION == 2
        f.attrs["layout_version"] = 1  # as hpcmass wrote it before images had an energy-band axis
    expected = (r"store.h5: store layout version 1, this hpcmass \(\S+\) reads version 2 \(the observe stage's "
                r"images gained an energy-band axis \(observe.bands\)\); re-run the stages in a new --workdir")
    with pytest.raises(StoreError, match=expected):
        with Store.read(tmp_path):
            pass
    with pytest.raises(StoreError, match=expected):  # nothing is written into it either
        _write_catalog(tmp_path, p, [])
    with h5py.File(store_path(tmp_path), "r") as f:
        assert int(f.attrs["layout_version"]) == 1 and int(f["catalog"].attrs["n_runs"]) == 1


def test_layout_declares_every_dataset(tmp_path):
    with pytest.raises(KeyError, match="not declared"):
        with Store.open_stage(tmp_path, _params(), "catalog", world(), n_units=1, unit="c") as st:
            st.require("no_such_dataset")


def test_live_writer_is_refused_and_stale_lock_replaced(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = store_path(tmp_path).with_suffix(".h5.lock")
        tmp_path.mkdir(exist_ok=True)
        lock.write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid, "stage": "observe",
                                    "since": "2026-01-01T00:00:00+00:00", "slurm_job": None}))
        with pytest.raises(StoreError, match=rf"being written by pid {holder.pid} .*stage observe"):
            _write_catalog(tmp_path, _params(), [])
    finally:
        holder.kill()
        holder.wait()
    _write_catalog(tmp_path, _params(), [0])  # holder gone: the lock is stale and replaced
    assert not lock.exists()


def test_truncated_store_names_file_and_remedy(tmp_path):
    _write_catalog(tmp_path, _params(), range(12))
    path = store_path(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match=rf"{path}: cannot open the store .*truncated"):
        _write_catalog(tmp_path, _params(), [])
    with pytest.raises(StoreError, match="truncated"):
        status(tmp_path)
