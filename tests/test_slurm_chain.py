"""The stage chain on a real single-node SLURM: afterok chain, the train array, scancel and
resubmission, the time-limit warning and requeue. Params: params/ci.yaml."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcmass.params import STAGES, load_params
from hpcmass.store import status, store_path
from conftest import ROOT, base_env, hpcmass

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CI = ROOT / "params" / "ci.yaml"


def _submit(slurm, workdir: Path, *args) -> dict[str, str]:
    env = dict(base_env(workdir.parent), SLURM_CONF=str(slurm.conf))
    proc = hpcmass("submit", "--params", CI, "--workdir", workdir, *args, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0]: line.split()[2] for line in proc.stdout.splitlines() if " job " in line}


def _wait(slurm, job: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = slurm.job_state(job)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        time.sleep(2)
    raise AssertionError(f"job {job} still {slurm.job_state(job)} after {timeout} s\n{slurm.logs()}")


def _wait_until_partly_done(workdir: Path, stage: str, timeout: float = 300) -> None:
    """Return once some, not all, of the stage's units are done (so an interruption hits mid-stage)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = status(workdir)["stages"][stage] if store_path(workdir).exists() else None
        if s and 0 < s["done"] < s["total"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"{stage} never reached a partial state in {timeout} s")


def _start_requeued_now(slurm, job: str, timeout: float = 120) -> None:
    """SLURM holds a requeued batch job for about two minutes (Reason=BeginTime) before it may start
    again; on a cluster that is harmless, here it would be most of the test's time. Once the job is
    back in the queue held for its begin time, make it eligible at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        show = subprocess.run(["scontrol", "show", "job", job], env=slurm.env, capture_output=True, text=True).stdout
        if "JobState=PENDING" in show and "Reason=BeginTime" in show:
            # slurmd refuses a launch whose credential is not newer (in whole seconds) than the revocation
            # of the killed run's ("Job credential revoked"): let a second pass before starting it.
            time.sleep(2.0)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm.env, check=True)
            return
        if "JobState=COMPLETED" in show:
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} was not requeued within {timeout} s\n{slurm.logs()}")


def _logs(workdir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted((workdir / "slurm").glob("*.out")))


@pytest.fixture(scope="module")
def reference(ci_reference):
    """The images of the session's uninterrupted run with plain mpirun, to compare with."""
    with h5py.File(store_path(ci_reference[0]), "r") as f:
        return f["observe/images"][...]


def test_full_chain_completes_through_afterok(slurm, tmp_path):
    wd = tmp_path / "work"
    ids = _submit(slurm, wd)
    stages = [s for s in STAGES if s in ids]
    assert stages[0] == "catalog" and stages[-1] in ("report", "interpret") and "train" in stages
    last = ids[stages[-1]]
    assert _wait(slurm, last) == "COMPLETED", _logs(wd)
    st = status(wd)["stages"]
    for s in stages:
        assert st[s]["done"] == st[s]["total"], (s, st[s], _logs(wd))
    n_folds = load_params(CI).dataset.n_folds
    train_logs = sorted((wd / "slurm").glob("*-train-*_*.out"))
    assert len(train_logs) == n_folds, [p.name for p in train_logs]
    for k, log in enumerate(sorted(train_logs, key=lambda p: int(p.stem.rsplit("_", 1)[1]))):
        assert f"array task {k}" in log.read_text()
    # Resubmitting a finished chain submits nothing.
    env = dict(base_env(tmp_path), SLURM_CONF=str(slurm.conf))
    again = hpcmass("submit", "--params", CI, "--workdir", wd, env=env, timeout=60)
    assert again.returncode == 0 and "nothing to submit" in again.stdout


def test_cancelled_observe_resubmitted_equals_uninterrupted(slurm, tmp_path, reference):
    wd = tmp_path / "work"
    env = base_env(tmp_path)
    hpcmass("catalog", "--params", CI, "--workdir", wd, env=env, check=True, timeout=300)
    job = _submit(slurm, wd, "--from", "observe", "--to", "observe")["observe"]
    _wait_until_partly_done(wd, "observe")
    subprocess.run(["scancel", job], env=slurm.env, check=True)
    assert _wait(slurm, job) == "CANCELLED"
    s = status(wd)["stages"]["observe"]
    assert s["done"] < s["total"]
    job2 = _submit(slurm, wd, "--from", "observe", "--to", "observe")["observe"]
    assert _wait(slurm, job2) == "COMPLETED", _logs(wd)
    with h5py.File(store_path(wd), "r") as f:
        np.testing.assert_array_equal(f["observe/images"][...], reference)


def test_time_limit_warning_requeues_and_resumes(slurm, tmp_path, reference):
    """The signal SLURM sends before the time limit (B:USR1 to the batch shell), delivered now."""
    wd = tmp_path / "work"
    env = base_env(tmp_path)
    hpcmass("catalog", "--params", CI, "--workdir", wd, env=env, check=True, timeout=300)
    job = _submit(slurm, wd, "--from", "observe", "--to", "observe")["observe"]
    _wait_until_partly_done(wd, "observe")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm.env, check=True)
    _start_requeued_now(slurm, job)
    assert _wait(slurm, job) == "COMPLETED", _logs(wd)
    log = _logs(wd)
    assert "time-limit warning" in log and "requeueing" in log and "restart 1" in log, log
    with h5py.File(store_path(wd), "r") as f:
        np.testing.assert_array_equal(f["observe/images"][...], reference)
