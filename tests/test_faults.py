"""Fault injection: SIGKILL every stage at random points, re-run, and demand the store an
uninterrupted run makes (images bitwise; training with deterministic ops, as params/ci.yaml sets).

Each stage is run from a copy of an uninterrupted reference workdir with that stage and every later
one removed, killed twice at random moments (whole process tree, no chance to clean up), then run
to the end; every unit must then equal the reference (timings aside). The kill moments come from
HPCMASS_FAULT_SEED (default 2019), as random fractions of the stage's wall time. The first run
redoes the whole stage: should it end before its kill moment (run times vary by a third between
identical runs), its own duration replaces the reference's and it is run again, so that at least
one kill per stage lands (asserted). Printed at the end: faults injected, runs completed, units
lost (units marked done before a kill that the final store does not hold as the reference does) — 0.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hpcmass.params import STAGES
from hpcmass.store import LAYOUT, status, store_path
from conftest import ROOT, base_env, kill_tree

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
CI = ROOT / "params" / "ci.yaml"
KILLED_STAGES = ("catalog", "observe", "train", "interpret")
#: Wall-clock timings: the only datasets that may differ between identical runs.
TIMINGS = {("observe", "seconds"), ("train", "history_seconds")}
TALLY = {"faults": 0, "completed": 0, "lost": 0, "missed": 0}
#: Kill moments, as fractions of the stage's wall time: the first run (--restart-from, the whole
#: stage; up to FIRST_TRIES runs until a kill lands), then the resumed one.
KILL_AT = ((0.2, 0.8), (0.3, 0.9))
FIRST_TRIES = 4


def _cmd(stage, wd, *extra):
    return ["mpirun", "-n", "2", "-x", "PYTHONPATH", "-x", "TF_USE_LEGACY_KERAS", sys.executable, "-m", "hpcmass",
            stage, "--params", str(CI), "--workdir", str(wd), *extra]


def _run_until(cmd, env, moment: float, log) -> tuple[bool, float]:
    """Run ``cmd``; SIGKILL its whole tree ``moment`` s after the start unless it ended before.
    Returns (whether SIGKILL ended it, seconds it ran)."""
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
    # Killed only if SIGKILL ended it: a run that exited just before kill() was not.
    killed = proc.returncode == -signal.SIGKILL
    assert killed or proc.returncode == 0, f"{cmd} failed on its own:\n{log.read_text()[-3000:]}"
    return killed, time.monotonic() - t0


def _stage_data(wd, stage) -> dict[str, np.ndarray]:
    with h5py.File(store_path(wd), "r", locking=False) as f:
        g = f[stage]
        return {name: g[name][...] for name in LAYOUT[stage] if name in g and (stage, name) not in TIMINGS} | \
            {"done": g["done"][...]}


@pytest.fixture(scope="module")
def reference(ci_reference):
    """catalog → interpret uninterrupted, with each stage's wall time (the session's, tests/conftest.py)."""
    return ci_reference


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
    stage_seconds, runs = seconds[stage], []
    for attempt, (lo, hi) in enumerate(KILL_AT):
        for _ in range(FIRST_TRIES if attempt == 0 else 1):
            extra = ["--restart-from", stage] if attempt == 0 else []
            moment = rng.uniform(lo, hi) * stage_seconds
            killed, ran = _run_until(_cmd(stage, wd, *extra), env, moment, tmp_path / f"run{len(runs)}.log")
            runs.append(f"{'killed' if killed else 'ended'} at {ran:.1f} s (kill moment {moment:.1f} s)")
            TALLY["faults"] += killed
            if store_path(wd).exists() and status(wd)["stages"].get(stage):
                done = _stage_data(wd, stage)["done"] == 1
                done_before_kill = done if done_before_kill.size == 0 else done_before_kill | done
            if killed:
                break
            if attempt == 0:
                stage_seconds = ran  # it did the whole stage: how long the stage takes now
                TALLY["missed"] += 1
    assert any(r.startswith("killed") for r in runs), f"{stage}: no kill landed, nothing was tested: {runs}"
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
        kill_tree(first)


def test_fault_tally(capsys):
    """Runs last in this file: the summary the issue asks for (units done before a kill that the
    final store does not hold exactly as the uninterrupted run does), printed past pytest's capture."""
    with capsys.disabled():
        print(f"\nfault injection: {TALLY['faults']} faults injected, {TALLY['completed']} runs completed, "
              f"{TALLY['lost']} units lost ({TALLY['missed']} whole-stage runs ended before their kill moment)")
    if TALLY["completed"] != len(KILLED_STAGES):
        pytest.fail(f"{TALLY['completed']} of the {len(KILLED_STAGES)} killed stages ({', '.join(KILLED_STAGES)}) "
                    f"were re-run to completion: the tally sums test_sigkill_then_rerun_equals_uninterrupted, so run "
                    f"the whole file (a failure of one of those is reported above)")
    assert TALLY["faults"] >= len(KILLED_STAGES), TALLY  # each of those tests asserts one kill landed
    assert TALLY["lost"] == 0
