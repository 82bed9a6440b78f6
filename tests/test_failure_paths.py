"""Failure paths and the job scripts, each through the command line: an uncaught exception on one
rank ends the whole MPI job; a bad --restart-from is one line and discards nothing; `hpcmass submit`
prints (--dry-run) and submits the afterok chain; jobs/pipeline.sh resumes a half-done workdir to
the report; a stage run with per-rank shard files gives the store an unsharded run gives.

The workdir tests start from copies of the session's reference run (tests/conftest.py: ci_reference).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcmass.params import STAGES, load_params
from hpcmass.store import LAYOUT, store_path
from conftest import PROGRAMS, ROOT, base_env, hpcmass, kill_tree, mpirun, run

CI = ROOT / "params" / "ci.yaml"
#: How long a 2-rank job may take to end after one rank raised (start-up included: ~1 s); then it is killed.
ABORT_WITHIN_S = 30


def _copy(reference, tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    shutil.copytree(reference, wd)
    return wd


def _stage_states(wd: Path) -> dict:
    """Per-stage (done, failed, total, params_hash) from `hpcmass status --json`."""
    proc = hpcmass("status", "--workdir", wd, "--json", check=True, timeout=120)
    return {s: (v["done"], v["failed"], v["total"], v["params_hash"]) if v else None
            for s, v in json.loads(proc.stdout)["stages"].items()}


# --- an uncaught exception on one rank ---------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.parametrize("where, failing", [("", 1), ("--on-root", 0)])
def test_uncaught_exception_on_one_rank_ends_the_whole_job(tmp_path, where, failing):
    """Rank 1 raises while rank 0 waits in Barrier, or rank 0's work in on_root raises while rank 1 waits
    for it and rank 0's clean-up needs a collective: either must abort the job, not hang."""
    cmd = ["mpirun", "-n", "2", "-x", "PYTHONPATH", sys.executable, str(PROGRAMS / "raise_on_one_rank.py"),
           *([where] if where else [])]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=ABORT_WITHIN_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(f"the job still ran {ABORT_WITHIN_S} s after one rank raised (the others hang in the "
                    f"collective):\n{err[-2000:]}")
    seconds = time.monotonic() - t0
    assert proc.returncode != 0, (out, err)
    assert seconds < ABORT_WITHIN_S, f"the job took {seconds:.0f} s to end after one rank raised"
    assert "Traceback (most recent call last)" in err
    assert f"RuntimeError: rank {failing} fails on purpose while the others wait in a collective" in err
    assert "past the collective" not in out


# --- --restart-from -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage, value, ranks", [
    ("catalog", "nonsense", 1),  # not a stage
    ("dataset", "interpret", 2),  # a stage after the command's: under mpirun, still printed once
])
@pytest.mark.mpi
@pytest.mark.slow  # the session's reference run: about a minute, unless an earlier test built it
def test_invalid_restart_from_is_one_line_and_discards_nothing(ci_reference, tmp_path, stage, value, ranks):
    wd = _copy(ci_reference[0], tmp_path)
    before = _stage_states(wd)
    args = ["-m", "hpcmass", stage, "--params", CI, "--workdir", wd, "--restart-from", value]
    proc = mpirun(2, *args, env=base_env(tmp_path), timeout=300) if ranks == 2 else run([sys.executable, *args],
                                                                                        env=base_env(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"hpcmass {stage}: error:")]
    assert len(errors) == 1, proc.stderr
    assert "--restart-from" in errors[0] and re.search(rf"\b{value}\b", errors[0]), errors[0]
    assert "Traceback" not in proc.stderr
    assert _stage_states(wd) == before  # no stage dropped or changed
    with h5py.File(store_path(wd), "r") as now, h5py.File(store_path(ci_reference[0]), "r") as ref:
        for s in STAGES[: STAGES.index("interpret") + 1]:
            assert now[s].attrs["n_runs"] == ref[s].attrs["n_runs"], s  # not even reopened for writing


# --- hpcmass submit ---------------------------------------------------------------------------

FAKE_SBATCH = """#!{python}
# Records its arguments and answers as `sbatch --parsable` does (job id;cluster).
import json, os, sys
log = os.environ["FAKE_SBATCH_LOG"]
calls = open(log).read().splitlines() if os.path.exists(log) else []
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print(f"{{1001 + len(calls)}};fake")
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    """An env whose PATH finds a recording `sbatch` first; returns (env, log of calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(python=sys.executable))
    sbatch.chmod(0o755)
    log = tmp_path / "sbatch.calls"
    env = dict(base_env(tmp_path), PATH=f"{bin_dir}:{base_env()['PATH']}", FAKE_SBATCH_LOG=str(log))
    env.pop("SLURM_CONF", None)
    return env, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_submit_dry_run_prints_the_chain_and_submit_chains_it_with_afterok(fake_sbatch, tmp_path):
    env, log = fake_sbatch
    wd = tmp_path / "work"
    params = load_params(CI)
    dry = hpcmass("submit", "--params", CI, "--workdir", wd, "--dry-run", env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert _calls(log) == [], "--dry-run must not call sbatch"
    lines = [shlex.split(line) for line in dry.stdout.splitlines()]
    assert [c[0] for c in lines] == ["sbatch"] * len(STAGES), dry.stdout
    assert [next(a for a in c if a.startswith("--job-name=")) for c in lines] == \
        [f"--job-name=hpcmass-{params.run.name}-{s}" for s in STAGES]
    for stage, cmd in zip(STAGES, lines):
        assert "--parsable" in cmd and "--requeue" in cmd, cmd
        assert f"--ntasks={getattr(params.site, stage).ntasks}" in cmd, cmd
        assert not any(a.startswith("--dependency") for a in cmd), "dependencies are added at submission"
        # the job script, then the stage's hpcmass arguments
        assert cmd[-6:] == [str(ROOT / "slurm" / "stage.sbatch"), stage, "--params", str(CI.resolve()),
                            "--workdir", str(wd.resolve())], cmd
        arrays = [a for a in cmd if a.startswith("--array")]
        assert arrays == ([f"--array=0-{params.dataset.n_folds - 1}"] if stage == "train" else []), cmd
    assert not wd.exists() or not store_path(wd).exists()

    real = hpcmass("submit", "--params", CI, "--workdir", wd, env=env, timeout=120)
    assert real.returncode == 0, real.stderr
    calls = _calls(log)
    assert len(calls) == len(STAGES)
    ids = [str(1001 + k) for k in range(len(STAGES))]
    for k, (call, printed) in enumerate(zip(calls, lines)):
        deps = [a for a in call if a.startswith("--dependency")]
        assert deps == ([f"--dependency=afterok:{ids[k - 1]}"] if k else []), call
        assert [a for a in call if not a.startswith("--dependency")] == printed[1:]  # what --dry-run printed
    assert [line.split() for line in real.stdout.splitlines()[: len(STAGES)]] == \
        [[s, "job", i] for s, i in zip(STAGES, ids)]


@pytest.mark.mpi
@pytest.mark.slow  # the session's reference run: about a minute, unless an earlier test built it
def test_submit_skips_the_stages_the_store_marks_complete(ci_reference, fake_sbatch):
    env, log = fake_sbatch
    dry = hpcmass("submit", "--params", CI, "--workdir", ci_reference[0], "--dry-run", env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert [shlex.split(line)[-5] for line in dry.stdout.splitlines()] == ["report"], dry.stdout
    assert _calls(log) == []


# --- jobs/pipeline.sh -----------------------------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.slow  # the session's reference run: about a minute, unless an earlier test built it
def test_pipeline_script_resumes_a_workdir_and_finishes_with_the_report(ci_reference, tmp_path):
    """The reference holds catalog..interpret: every stage's job runs and finds its work done, the
    report is made for real, and nothing done before is redone."""
    ref, _ = ci_reference
    wd = _copy(ref, tmp_path)
    env = dict(base_env(tmp_path), VENV=sys.prefix)
    proc = run(["bash", ROOT / "jobs" / "pipeline.sh", "--params", CI, "--workdir", wd, "--ranks", "2"], env=env,
               timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ran = re.findall(r"^=== hpcmass (\S+) \((\d+) ranks\) ===$", proc.stdout, re.M)
    assert ran == [(s, "2") for s in STAGES], proc.stdout
    assert re.search(r"^pipeline finished in \d+ s$", proc.stdout, re.M), proc.stdout
    assert (wd / "report" / "index.html").is_file()
    states = _stage_states(wd)
    for s in STAGES:
        done, failed, total, _ = states[s]
        assert done == total and failed == 0, (s, states[s])
    with h5py.File(store_path(wd), "r") as now, h5py.File(store_path(ref), "r") as before:
        for s in STAGES[: STAGES.index("interpret") + 1]:
            assert now[s].attrs["created_utc"] == before[s].attrs["created_utc"], f"/{s} was made afresh"
            assert now[s].attrs["n_runs"] > before[s].attrs["n_runs"], f"/{s}: its job did not open the store"
        np.testing.assert_array_equal(now["observe/images"][...], before["observe/images"][...])
        np.testing.assert_array_equal(now["interpret/pred_dream"][...], before["interpret/pred_dream"][...])


# --- shard files ---------------------------------------------------------------------------------


def _graft(src: h5py.Group, dst: h5py.File) -> None:
    """Copy a stage group (attributes, datasets) into another store by value (H5Ocopy, i.e.
    Group.copy, crashes with this parallel HDF5 build)."""
    g = dst.create_group(src.name)
    for k, v in src.attrs.items():
        g.attrs[k] = v
    for name, ds in src.items():
        d = g.create_dataset(name, data=ds[...])
        for k, v in ds.attrs.items():
            d.attrs[k] = v


@pytest.mark.mpi
@pytest.mark.slow  # the session's reference run: about a minute, unless an earlier test built it
def test_sharded_catalog_equals_an_unsharded_run_and_feeds_the_next_stage(ci_reference, tmp_path):
    ref, _ = ci_reference
    wd = tmp_path / "work"
    env = dict(base_env(tmp_path), HPCMASS_STORE_SHARDS="1")
    proc = mpirun(2, "-m", "hpcmass", "catalog", "--params", CI, "--workdir", wd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HPCMASS_STORE_SHARDS=1" in proc.stderr  # the shard mode's warning: shards were written
    assert len(list((wd / "catalog" / "shards").glob("catalog-*.h5"))) == 2
    with h5py.File(store_path(wd), "r") as got, h5py.File(store_path(ref), "r") as want:
        g, w = got["catalog"], want["catalog"]
        assert g.attrs["params_hash"] == w.attrs["params_hash"]
        assert (g["done"][...] == 1).all() and not g["error"][...].any()
        for name in LAYOUT["catalog"]:
            assert g[name].is_virtual and not w[name].is_virtual, name
            a, b = g[name][...], w[name][...]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert a.tobytes() == b.tobytes(), f"/catalog/{name} differs from the unsharded run"
    # The next stage's other input: the reference's observe stage, grafted (observe itself takes ~30 s).
    with h5py.File(store_path(wd), "a") as got, h5py.File(store_path(ref), "r") as want:
        _graft(want["observe"], got)
    n = load_params(CI).catalog.n_clusters
    states = _stage_states(wd)
    assert states["catalog"][:3] == (n, 0, n) and states["observe"][:3] == (n, 0, n), states
    # The dataset stage reads /catalog (masses, through the virtual datasets) to deal the folds.
    proc = hpcmass("dataset", "--params", CI, "--workdir", wd, env=base_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(store_path(wd), "r") as got, h5py.File(store_path(ref), "r") as want:
        np.testing.assert_array_equal(got["dataset/fold"][...], want["dataset/fold"][...])
        assert (got["dataset/done"][...] == 1).all()
