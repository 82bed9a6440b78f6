"""studies/learning_curves.py: its fixed-length records are the train stage's trajectories, so the
rules it replays keep what the train stage keeps."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, base_env, hpcmass, run
from toy_clusters import toy_images, write_toy_store

from hpcmass.dataset.folds import assign_folds
from hpcmass.params import load_params
from hpcmass.store import Store
from hpcmass.train.stopping import decide

CI = ["--params", "params/ci.yaml"]


def test_study_records_replay_the_train_stage(tmp_path):
    work, out = tmp_path / "work", tmp_path / "study"
    images, log_m = toy_images(10, pixels=24, seed=11)
    write_toy_store(work, load_params("params/ci.yaml"), images, log_m, assign_folds(log_m, 3))
    env = base_env(tmp_path)
    study = run([sys.executable, "studies/learning_curves.py", *CI, "--workdir", str(work), "--epochs", "3",
                 "--folds", "0,1", "--out", str(out)], env=env, cwd=ROOT)
    assert study.returncode == 0, study.stderr[-3000:]
    assert "oracle: each fold's best test epoch (not a rule)" in study.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["params"]["scaling"] == "log1p"
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    record = dict(np.load(out / "fold_00.npz"))
    assert record["test_pred"].shape == (3, (assign_folds(log_m, 3) == 0).sum(), 24)
    # The train stage on the same fold, never stopping early: the same trajectory, bit for bit
    # (one process, deterministic ops), and its kept model is the record's at the kept epoch.
    hpcmass("train", *CI, "--workdir", work, "--fold", "0", "--set", "train.max_epochs=3", "--set",
            "train.patience=3", env=env, check=True)
    with Store.read(work) as s:
        val_loss, kept = s.file["train/history_val_loss"][0], int(s.file["train/epoch_chosen"][0])
        pred = s.file["train/pred_log_m500c"][...]
    np.testing.assert_array_equal(val_loss.astype(np.float32), record["val_loss"].astype(np.float32))
    assert kept == decide(record["val_loss"], record["val_met"], "plateau", 3, 3).kept
    np.testing.assert_array_equal(pred[record["test_clusters"]], record["test_pred"][kept - 1])
    rows = {row["rule"]: row for row in summary["rows"]}
    assert rows["plateau, patience 10"]["folds"][0]["kept"] == kept
    paper = rows["paper"]["folds"][0]
    met = np.flatnonzero(record["val_met"])
    assert paper["kept"] == (met[0] + 1 if met.size else 3)
    # The fixed-epoch row is the record's last epoch.
    records = [dict(np.load(out / f"fold_{k:02d}.npz")) for k in (0, 1)]
    last = np.concatenate([r["test_pred"][-1] - log_m[r["test_clusters"], None] for r in records])
    assert rows["fixed: epoch 3 (the end of the record)"]["scatter"]["sigma"] == pytest.approx(np.std(last))
