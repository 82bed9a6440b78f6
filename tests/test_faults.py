"""Fault injection: SIGKILL every stage at random points, re-run, and demand the store an
uninterrupted run makes (images bitwise; training with deterministic ops, as params/ci.yaml sets).

Each stage is run from a copy of an uninterrupted reference workdir with that stage and every later
one removed, killed twice at random moments (whole process tree, no chance to clean up), then run
to the end; every unit must then equal the reference (timings aside). The kill moments come from
HPCMASS_FAULT_SEED (default 2019). Printed at the end: faults injected, runs completed, units lost
(units marked done before a kill that the final store does not hold as the reference does) — 0.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import psutil
import pytest

from hpcmass.params import STAGES
from hpcmass.store import LAYOUT, status, store_path
from conftest import ROOT, base_env, mpirun

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
CI = ROOT / "params" / "ci.yaml"
KILLED_STAGES = ("catalog", "observe", "train", "interpret")
#: Wall-clock timings: the only datasets that may differ between identical runs.
TIMINGS = {("observe", "seconds"), ("train", "history_seconds")}
TALLY = {"faults": 0, "completed": 0, "lost": 0}


def _cmd(stage, wd, *extra):
    return ["mpirun", "-n", "2", "-x", "PYTHONPATH", "-x", "TF_USE_LEGACY_KERAS", sys.executable, "-m", "hpcmass",
            stage, "--params", str(CI), "--workdir", str(wd), *extra]


def _kill_tree(proc: subprocess.Popen) -> None:
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


def _stage_data(wd, stage) -> dict[str, np.ndarray]:
    with h5py.File(store_path(wd), "r", locking=False) as f:
        g = f[stage]
        return {name: g[name][...] for name in LAYOUT[stage] if name in g and (stage, name) not in TIMINGS} | \
            {"done": g["done"][...]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """catalog → interpret uninterrupted, with each stage's wall time."""
    wd = tmp_path_factory.mktemp("faults") / "reference"
    env = base_env(wd.parent)
    seconds = {}
    for stage in STAGES[: STAGES.index("interpret") + 1]:
        t0 = time.monotonic()
        mpirun(2, "-m", "hpcmass", stage, "--params", CI, "--workdir", wd, env=env, check=True, timeout=900)
        seconds[stage] = time.monotonic() - t0
    return wd, seconds


def _prepare(reference_wd, stage, wd):
    """The reference workdir as it was before ``stage`` ran."""
    shutil.copytree(reference_wd, wd)
    for later in STAGES[STAGES.index(stage):]:
        shutil.rmtree(wd / later, ignore_errors=True)


@pytest.mark.parametrize("stage", KILLED_STAGES)
def test_sigkill_then_rerun_equals_uninterrupted(stage, reference, tmp_path):
    ref_wd, seconds = reference
    wd = tmp_path / "work"
    _prepare(ref_wd, stage, wd)
    env = base_env(tmp_path)
    rng = random.Random(f"{os.environ.get('HPCMASS_FAULT_SEED', '2019')}-{stage}")
    done_before_kill = np.zeros(0, dtype=bool)
    for attempt in range(2):
        extra = ["--restart-from", stage] if attempt == 0 else []
        proc = subprocess.Popen(_cmd(stage, wd, *extra), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * seconds[stage])
        if proc.poll() is None:
            _kill_tree(proc)
            TALLY["faults"] += 1
        if store_path(wd).exists() and status(wd)["stages"].get(stage):
            done = _stage_data(wd, stage)["done"] == 1
            done_before_kill = done if done_before_kill.size == 0 else done_before_kill | done
    proc = subprocess.run(_cmd(stage, wd), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    TALLY["completed"] += 1
    got, want = _stage_data(wd, stage), _stage_data(ref_wd, stage)
    assert (got["done"] == 1).all()
    differing = np.zeros(want["done"].shape, dtype=bool)
    for name, ref in want.items():
        assert name in got, name
        if ref.shape[:1] == differing.shape and ref.ndim >= 1:
            diff = got[name] != ref if ref.dtype.kind != "f" else ~((got[name] == ref) | (np.isnan(got[name]) & np.isnan(ref)))
            differing |= diff.reshape(diff.shape[0], -1).any(axis=1)
        else:
            np.testing.assert_array_equal(got[name], ref, err_msg=f"/{stage}/{name}")
    if done_before_kill.size:
        TALLY["lost"] += int((done_before_kill & differing).sum())
    assert not differing.any(), f"{stage}: units differing from the uninterrupted run: {np.flatnonzero(differing)}"


def test_second_concurrent_run_is_refused(reference, tmp_path):
    ref_wd, _ = reference
    wd = tmp_path / "work"
    _prepare(ref_wd, "observe", wd)
    env = base_env(tmp_path)
    first = subprocess.Popen(_cmd("observe", wd, "--restart-from", "observe"), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = wd / "store.h5.lock"
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "hpcmass", "observe", "--params", str(CI), "--workdir",
                                 str(wd)], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if line.startswith("hpcmass observe: error:")]
        assert len(errors) == 1 and "is being written by pid" in errors[0], second.stderr
        assert "Traceback" not in second.stderr
    finally:
        _kill_tree(first)


def test_fault_tally(capsys):
    """Runs last in this file: the summary the issue asks for (units done before a kill that the
    final store does not hold exactly as the uninterrupted run does), printed past pytest's capture."""
    with capsys.disabled():
        print(f"\nfault injection: {TALLY['faults']} faults injected, {TALLY['completed']} runs completed, "
              f"{TALLY['lost']} units lost")
    assert TALLY["lost"] == 0
