"""Every stage from Python with ``comm=None``: the README's "From Python" block, run as it stands
(a plain process, no mpirun), must make the store the command line makes under ``mpirun -n 2``
(bit for bit up to the dataset stage; training to float32 rounding, see below)."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hpcmass.store import LAYOUT, store_path
from conftest import ROOT, base_env

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
#: Wall-clock timings: the only datasets that differ between identical runs.
TIMINGS = {("observe", "seconds"), ("train", "history_seconds")}


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "README's From Python section must hold one python block"
    return blocks[0]


def test_readme_block_runs_every_stage_serially_and_matches_mpirun(tmp_path, ci_reference):
    ref_wd, _ = ci_reference
    (tmp_path / "params").symlink_to(ROOT / "params")
    proc = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=tmp_path, env=base_env(tmp_path),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"CNN scatter \d\.\d{3} dex", proc.stdout), proc.stdout
    assert "clusters: 10 mean residual:" in proc.stdout
    wd = tmp_path / "runs" / "python"
    assert (wd / "report" / "index.html").exists()
    with h5py.File(store_path(wd), "r") as got, h5py.File(store_path(ref_wd), "r") as want:
        for stage in ("catalog", "observe", "dataset", "train", "interpret"):
            assert int(got[stage].attrs["last_run_ranks"]) == 1  # comm=None: one rank
            if stage != "train":  # (the train stage's store is written by one process in any run)
                assert int(want[stage].attrs["last_run_ranks"]) == 2
            np.testing.assert_array_equal(got[stage]["done"][...], want[stage]["done"][...])
        for stage in ("catalog", "observe", "dataset"):  # bit-identical at any rank count
            assert set(got[stage]) == set(want[stage])
            for name in LAYOUT[stage]:
                if (stage, name) not in TIMINGS and name in want[stage]:  # (no exposure maps for the paper's mocks)
                    np.testing.assert_array_equal(got[stage][name][...], want[stage][name][...],
                                                  err_msg=f"/{stage}/{name}")
        # mpirun binds each rank to one core, so TensorFlow sums in another order than the serial
        # process's two threads: the same training to float32 rounding (measured: 1e-6 dex).
        for name in ("epoch_chosen", "criteria_met"):
            np.testing.assert_array_equal(got["train"][name][...], want["train"][name][...])
        np.testing.assert_allclose(got["train/pred_log_m500c"][...], want["train/pred_log_m500c"][...], atol=1e-5)
        # ... which the DeepDream rounding to whole photons can turn into a photon here and there.
        np.testing.assert_allclose(got["interpret/pred_dream"][...], want["interpret/pred_dream"][...], atol=1e-2)
        np.testing.assert_allclose(got["interpret/profile_median"][...], want["interpret/profile_median"][...],
                                   atol=1e-3)
        assert got["report"]["done"][...].tolist() == [1]
