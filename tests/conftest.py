"""Shared test helpers: real subprocesses of the CLI and real mpirun, with a hermetic environment."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture
def env(tmp_path):
    return base_env(tmp_path)


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
