"""A real SLURM: an sbatch job running an MPI program that writes into the parallel store."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from hpcmass.store import store_path
from conftest import PROGRAMS, ROOT

pytestmark = pytest.mark.slurm


def test_sbatch_job_runs_mpi_program_into_store(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"""#!/bin/bash
#SBATCH --job-name=hpcmass-test
#SBATCH --ntasks=2
#SBATCH --output={tmp_path}/slurm-%j.out
set -euo pipefail
cd {ROOT}
mpirun -n $SLURM_NTASKS {sys.executable} {PROGRAMS / 'farm_store.py'} {tmp_path / 'work'} 16
""")
    proc = slurm.sbatch(str(script), wait=True, timeout=300)
    job = proc.stdout.strip().split(";")[0]
    out = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert proc.returncode == 0, f"job {job}: {proc.stderr}\n{out}\n{slurm.logs()}"
    assert slurm.job_state(job) == "COMPLETED"
    assert "done 16/16 failed 0" in out
    with h5py.File(store_path(tmp_path / "work"), "r") as f:
        assert (f["catalog/done"][...] == 1).all()
        assert set(f["catalog/rank"][...]) == {0, 1}
        assert int(f["catalog"].attrs["last_run_ranks"]) == 2
        assert np.isfinite(f["catalog/values"][...]).all()
