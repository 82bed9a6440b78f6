"""Set-up: a second run finds everything in place and rebuilds nothing."""

import h5py

from conftest import ROOT, run


def test_second_setup_run_rebuilds_nothing():
    proc = run(["bash", ROOT / "scripts" / "setup.sh"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "environment up to date" in proc.stdout
    assert "building" not in proc.stdout and "installing" not in proc.stdout


def test_h5py_is_the_parallel_build():
    assert h5py.get_config().mpi
