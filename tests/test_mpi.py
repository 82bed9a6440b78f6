"""MPI helpers and the parallel store under real mpirun at 1, 2 and 3 ranks."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from hpcmass.store import parallel_hdf5, store_path
from conftest import PROGRAMS, ROOT, hpcmass, mpirun

FARM = PROGRAMS / "farm_store.py"
#: The line farm_store.py prints once its stop handlers are installed and its first unit is done.
READY = "farm: stop handler installed, first unit done"
pytestmark = pytest.mark.mpi


def _read(workdir):
    with h5py.File(store_path(workdir), "r") as f:
        return f["catalog/values"][...], f["catalog/rank"][...], f["catalog/done"][...]


def test_h5py_has_mpi():
    assert parallel_hdf5(), "set-up must build h5py against parallel HDF5"


@pytest.fixture(scope="module")
def farmed(tmp_path_factory):
    out = {}
    for n in (1, 2, 3):
        wd = tmp_path_factory.mktemp(f"farm{n}")
        mpirun(n, FARM, wd, 40, check=True, timeout=120)
        out[n] = _read(wd)
    return out


def test_results_do_not_depend_on_rank_count(farmed):
    values1, _, done1 = farmed[1]
    assert (done1 == 1).all()
    for n in (2, 3):
        values, ranks, done = farmed[n]
        assert (done == 1).all()
        np.testing.assert_array_equal(values, values1)
        assert set(ranks) == set(range(n)), "every rank, rank 0 included, must take work"


def test_busy_rank_does_not_stall_the_others(tmp_path):
    # Unit 0 sleeps 4 s outside MPI; the RMA counter must keep serving the other rank meanwhile.
    mpirun(2, FARM, tmp_path, 30, "--sleep-unit", "0:4", check=True, timeout=120)
    _, ranks, _ = _read(tmp_path)
    busy = ranks[0]
    assert np.sum(ranks == busy) <= 2 and np.sum(ranks != busy) >= 28


def test_killed_run_resumes_to_identical_store(tmp_path, farmed):
    proc = mpirun(2, FARM, tmp_path, 40, "--exit-after", "5", timeout=120)
    assert proc.returncode != 0
    _, _, done = _read(tmp_path)
    assert 0 < done.sum() < 40
    mpirun(3, FARM, tmp_path, 40, check=True, timeout=120)
    values, _, done = _read(tmp_path)
    assert (done == 1).all()
    np.testing.assert_array_equal(values, farmed[1][0])


def test_failed_units_are_recorded(tmp_path):
    proc = mpirun(2, FARM, tmp_path, 12, "--fail-unit", "4", check=True, timeout=120)
    assert "done 11/12 failed 1" in proc.stdout
    with h5py.File(store_path(tmp_path), "r") as f:
        assert f["catalog/error"][4] == b"unit 4 asked to fail"


def test_status_under_mpirun_prints_once(tmp_path):
    mpirun(2, FARM, tmp_path, 12, check=True, timeout=120)
    proc = mpirun(2, "-m", "hpcmass", "status", "--params", ROOT / "params" / "ci.yaml", "--workdir", tmp_path,
                  "--json", check=True, timeout=120)
    report = json.loads(proc.stdout)
    assert report["stages"]["catalog"]["done"] == 12 and report["stages"]["catalog"]["total"] == 12


def test_version_and_module_entry_point():
    from hpcmass import __version__

    proc = hpcmass("--version", check=True)
    assert proc.stdout.strip() == f"hpcmass {__version__}"


def test_shard_files_joined_by_virtual_datasets(tmp_path, farmed):
    """Where h5py lacks MPI each rank writes a shard; the store maps them as virtual datasets."""
    from conftest import base_env

    env = dict(base_env(tmp_path), HPCMASS_STORE_SHARDS="1")
    wd = tmp_path / "work"
    proc = mpirun(2, FARM, wd, 40, "--exit-after", "4", env=env, timeout=120)
    assert proc.returncode != 0
    proc = mpirun(3, FARM, wd, 40, env=env, check=True, timeout=120)
    assert "done 40/40 failed 0" in proc.stdout
    assert "h5py has no MPI support (or HPCMASS_STORE_SHARDS=1)" in proc.stderr
    shards = sorted((wd / "catalog" / "shards").glob("catalog-*.h5"))
    assert len(shards) == 5  # 2 ranks of the killed run + 3 of the resumed one
    # Read from another directory: the virtual datasets' shard paths are relative to the store.
    moved = tmp_path / "moved"
    wd.rename(moved)
    with h5py.File(store_path(moved), "r") as f:
        assert f["catalog/values"].is_virtual
        np.testing.assert_array_equal(f["catalog/values"][...], farmed[1][0])
        assert (f["catalog/done"][...] == 1).all()


def test_stop_signal_finishes_unit_in_hand_and_resumes(tmp_path, farmed):
    """SIGUSR1 (SLURM's time-limit warning) stops the farm cleanly; a re-run completes it."""
    import queue
    import signal
    import subprocess
    import sys
    import threading

    from conftest import base_env

    wd = tmp_path / "work"
    cmd = ["mpirun", "-n", "2", "-x", "PYTHONPATH", sys.executable, str(FARM), str(wd), "40",
           "--default-sleep", "0.25"]
    with open(tmp_path / "stderr.txt", "w+") as err_file:
        proc = subprocess.Popen(cmd, env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=err_file, text=True)
        lines: queue.Queue = queue.Queue()

        def read_stdout():
            for text in proc.stdout:
                lines.put(text)
            lines.put(None)  # end of output

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        out = []
        try:
            # farm_store.py prints READY once every rank's stop handler is installed and work began.
            while (line := lines.get(timeout=60)) is not None and line.strip() != READY:
                out.append(line)
            assert line is not None, f"the farm ended without printing {READY!r}:\n{''.join(out)}"
            proc.send_signal(signal.SIGUSR1)
            proc.wait(timeout=60)
        except (queue.Empty, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            err_file.seek(0)
            raise AssertionError(f"no READY line, or no exit after SIGUSR1, within 60 s\n{err_file.read()[-3000:]}")
        reader.join(timeout=10)
        while (line := lines.get_nowait()) is not None:
            out.append(line)
        out = "".join(out)
        err_file.seek(0)
        err = err_file.read()
    assert proc.returncode == 75, err
    _, _, done = _read(wd)
    assert 0 < done.sum() < 40 and f"done {done.sum()}/40" in out
    mpirun(2, FARM, wd, 40, check=True, timeout=120)
    values, _, done = _read(wd)
    assert (done == 1).all()
    np.testing.assert_array_equal(values, farmed[1][0])
