"""Shared test helpers: real subprocesses of the CLI and real mpirun, with a hermetic environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "tests" / "mpi_programs"


def base_env(tmp_home: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "OMPI_MCA_mpi_yield_when_idle": "1",
        "HPCMASS_PROGRESS": "0",
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.pop("HPCMASS_WORKDIR", None)
    if tmp_home is not None:
        # soxs writes its config under XDG_CONFIG_HOME on import: keep tests off the real $HOME.
        env["XDG_CONFIG_HOME"] = str(tmp_home / "xdg")
    return env


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 300, cwd: Path | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env or base_env(), cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def mpirun(n: int, *args, **kw) -> subprocess.CompletedProcess:
    return run(["mpirun", "-n", str(n), "-x", "TF_USE_LEGACY_KERAS", "-x", "PYTHONPATH", sys.executable, *args],
               **kw)


def hpcmass(*args, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "hpcmass", *args], **kw)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and all its descendants (mpirun and its ranks): no chance to clean up."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


@pytest.fixture
def env(tmp_path):
    return base_env(tmp_path)


@pytest.fixture(scope="session")
def ci_reference(tmp_path_factory):
    """params/ci.yaml run uninterrupted from catalog to interpret under ``mpirun -n 2`` (one parallel
    HDF5 store, no shards), and each stage's wall time [s]: (workdir, {stage: seconds}).

    Built once per session (about a minute) for test_faults, test_failure_paths, test_slurm_chain and
    test_python_api; read-only: copy the workdir before running anything in it.
    """
    from hpcmass.params import STAGES

    wd = tmp_path_factory.mktemp("ci_reference") / "work"
    env = base_env(wd.parent)
    env.pop("HPCMASS_STORE_SHARDS", None)
    seconds = {}
    for stage in STAGES[: STAGES.index("interpret") + 1]:
        t0 = time.monotonic()
        mpirun(2, "-m", "hpcmass", stage, "--params", ROOT / "params" / "ci.yaml", "--workdir", wd, env=env,
               check=True, timeout=900)
        seconds[stage] = time.monotonic() - t0
    return wd, seconds


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node SLURM for the session; stopped afterwards."""
    from slurm_cluster import SlurmCluster, missing_binaries

    missing = missing_binaries()
    if missing:
        pytest.fail(f"SLURM tests need {', '.join(missing)}: run scripts/setup.sh (installs slurm-wlm and munge)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()
