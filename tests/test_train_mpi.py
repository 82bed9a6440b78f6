"""Horovod inside one fold, with real mpirun: gradients really averaged; `hpcmass train --horovod`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PROGRAMS, base_env, hpcmass, mpirun
from toy_clusters import toy_images, write_toy_store

from hpcmass.params import load_params
from hpcmass.store import Store

pytest.importorskip("horovod.tensorflow.keras")
pytestmark = pytest.mark.mpi
CI = ["--params", "params/ci.yaml"]


def test_two_ranks_average_gradients(tmp_path):
    out = tmp_path / "report.json"
    proc = mpirun(2, PROGRAMS / "hvd_average.py", out, env=base_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["size"] == 2 and r["shards_overlap"] == 0  # the ranks saw different views
    assert r["moved"] > 1e-3  # the steps changed the weights...
    assert r["ranks_differ"] == 0.0  # ...identically on both ranks,
    assert r["vs_union"] < 1e-5  # as one process stepping on the union of their batches,
    assert r["vs_rank0_alone"] > 100 * max(r["vs_union"], 1e-7)  # and not as rank 0's batches alone.


def test_hpcmass_train_with_horovod(tmp_path):
    env = base_env(tmp_path)
    images, log_m = toy_images(10, pixels=24, seed=10)
    write_toy_store(tmp_path, load_params("params/ci.yaml"), images, log_m)
    hpcmass("dataset", *CI, "--workdir", tmp_path, env=env, check=True)
    proc = mpirun(2, "-m", "hpcmass", "train", *CI, "--workdir", tmp_path, "--fold", "1", "--horovod", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "2 rank(s) with Horovod" in proc.stderr and "fold 1 epoch 2/2" in proc.stderr
    with Store.read(tmp_path) as s:
        g = s.file["train"]
        folds = s.file["dataset/fold"][...]
        assert list(g["done"][...]) == [0, 1, 0] and g["ranks"][1] == 2
        assert g["learning_rate"][1] == pytest.approx(2 * 5e-4)  # linear scaling with the ranks
        pred = g["pred_log_m500c"][...]
        assert np.isfinite(pred[folds == 1]).all() and np.isnan(pred[folds != 1]).all()
    # Only rank 0 wrote: one result, one model, the last two checkpoints, no stray temporaries.
    fold = tmp_path / "train" / "fold_01"
    assert sorted(p.name for p in fold.rglob("*") if p.is_file()) == ["epoch_0001.h5", "epoch_0002.h5",
                                                                       "model.keras", "result.h5"]
