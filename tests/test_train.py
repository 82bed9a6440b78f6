"""Train stage: the paper's CNN, the stopping rule, checkpoints and resume, NaN, fold results in the store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, base_env, hpcmass, mpirun
from toy_clusters import toy_images, write_toy_store

from hpcmass.dataset.folds import assign_folds
from hpcmass.errors import ParamsError, StageError, StoreBusyError
from hpcmass.images import make_views
from hpcmass.mpi import world
from hpcmass.params import load_params
from hpcmass.store import FAILED, Store, store_path

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

from hpcmass.train import checkpoint, stack  # noqa: E402
from hpcmass.train.stage import requested_folds  # noqa: E402
from hpcmass.train.files import checkpoint_dir, model_path, result_path  # noqa: E402
from hpcmass.train.fold import train_fold  # noqa: E402
from hpcmass.train.model import (PAPER_PARAMETERS, build_model, expected_parameters, load_fold_model,  # noqa: E402
                                 predict_log_m500c, predict_with_features, save_model_atomic,
                                 trainable_parameters, with_features)
from hpcmass.train.results import merge, read_result, retry_busy, write_result  # noqa: E402
from hpcmass.train.stopping import Decision, decide, evaluate, evaluate_params  # noqa: E402

# tf-keras seeds its initialisers with random.randint(1, 1e9) once a global seed is set.
pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")
CI = ["--params", "params/ci.yaml"]
#: In-process training leaves op determinism off: it is process-wide and would outlive these tests.
IN_PROCESS = ["train.deterministic=false"]


# --- the model ------------------------------------------------------------------------------------


def test_paper_cnn_has_58437_parameters_at_any_size():
    assert PAPER_PARAMETERS == 58_437 == expected_parameters(1)
    for pixels in (22, 32, 128):
        model = build_model(pixels)
        assert trainable_parameters(model) == model.count_params() == 58_437
    # Each further energy band adds a 3x3 kernel per filter of the first convolution, and nothing else.
    three = build_model(128, bands=3)
    assert trainable_parameters(three) == expected_parameters(3) == 58_437 + 2 * 9 * 16 == 58_725
    assert three.input_shape == (None, 3, 128, 128) and three.get_layer("conv1").kernel.shape == (3, 3, 3, 16)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["ScaleCounts", "Permute", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D",
                     "MaxPooling2D", "GlobalAveragePooling2D", "Dropout", "Dense", "Dropout", "Dense", "Dense",
                     "Dense"]
    assert [layer.filters for layer in model.layers if kinds[model.layers.index(layer)] == "Conv2D"] == [16, 32, 64]
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [200, 100, 20, 1]
    assert model.get_layer("conv3").output_shape == (None, 28, 28, 64)  # valid padding at 128 px
    with pytest.raises(ValueError, match="at least 22×22 pixels"):
        build_model(21)


def test_predictions_and_gradients_are_in_raw_counts(tmp_path):
    images, _ = toy_images(2, pixels=24, seed=6)
    counts = images.astype(np.float32)  # (2, 3, 1, 24, 24): 2 clusters, 3 projections, 1 band
    tf_keras.utils.set_random_seed(1)
    model = build_model(24, "log1p")
    pred = predict_log_m500c(model, counts)
    assert pred.shape == (2, 3) and np.isfinite(pred).all()
    # The scaling is the first layer: the same weights without it, fed log1p(counts), agree.
    raw = build_model(24, "none")
    raw.set_weights(model.get_weights())
    np.testing.assert_allclose(predict_log_m500c(raw, np.log1p(counts)), pred, rtol=1e-5, atol=1e-6)
    save_model_atomic(model, model_path(tmp_path, 4))
    loaded = load_fold_model(tmp_path, 4)
    np.testing.assert_array_equal(predict_log_m500c(loaded, counts), pred)
    assert loaded.get_layer("scale_counts").method == "log1p"
    x = tf.Variable(counts[0])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(loaded(x, training=False))
    grad = tape.gradient(y, x).numpy()
    assert grad.shape == (3, 1, 24, 24) and np.isfinite(grad).all() and np.abs(grad).max() > 0
    # The penultimate features: dense20's activations, from which the output layer gives the same prediction.
    both, features = predict_with_features(with_features(loaded), counts)
    assert features.shape == (2, 3, 20) and (features >= 0).all()  # ReLU
    np.testing.assert_array_equal(both, pred)
    w, b = loaded.get_layer("log_m500c").get_weights()
    np.testing.assert_allclose(features @ w[:, 0] + b[0], pred, rtol=0, atol=1e-5)
    missing = re.escape(f"{model_path(tmp_path, 5)}: no trained model for fold 5; run `hpcmass train --fold 5`")
    with pytest.raises(StageError, match=missing):
        load_fold_model(tmp_path, 5)


# --- the stopping rule ----------------------------------------------------------------------------


def test_stopping_rule_on_constructed_predictions():
    true = np.repeat(np.linspace(13.6, 15.0, 8), 24)
    noise = np.random.default_rng(0).normal(0, 0.01, true.size)
    good = evaluate(true + noise, true)
    assert good.met and abs(good.slope - 1) < 0.01 and good.max_abs_delta < 0.05
    # Each criterion alone fails it.
    outlier = true + noise
    outlier[5] += 0.31
    assert not evaluate(outlier, true).met and evaluate(outlier, true).max_abs_delta > 0.3
    biased = evaluate(true + noise + 0.025, true)
    assert not biased.met and biased.median_delta == pytest.approx(0.025, abs=0.005)
    mean = true.mean()
    shrunk = evaluate(mean + 0.85 * (true - mean) + noise, true)  # regression towards the mean
    assert not shrunk.met and shrunk.slope == pytest.approx(0.85, abs=0.01) and shrunk.max_abs_delta < 0.3
    assert evaluate(mean + 0.95 * (true - mean), true).met
    # Undefined slope (one validation cluster) and diverged predictions never count as converged.
    single = evaluate(np.full(24, 14.0), np.full(24, 14.0))
    assert np.isnan(single.slope) and not single.met
    assert not evaluate(np.full(true.size, np.nan), true).met
    # The thresholds are params.
    loose = load_params(None, ["train.stop_min_slope=0.8"]).train
    assert evaluate_params(mean + 0.85 * (true - mean) + noise, true, loose).met
    assert "criteria met" in good.describe() and "not met" in shrunk.describe()


def test_stopping_rules_replayed_on_known_histories():
    #          epoch:  1    2    3    4    5    6    7    8    9
    val_loss = [0.09, 0.05, 0.04, 0.03, 0.035, 0.02, 0.032, 0.03, 0.031]
    met = [0, 1, 1, 1, 1, 0, 1, 1, 1]
    # The paper's rule stops at the first epoch meeting the criteria and keeps it.
    assert decide(val_loss[:1], met[:1], "paper", 1, 9) == Decision(False, 1, False, "criteria not met yet")
    d = decide(val_loss[:2], met[:2], "paper", 1, 9)
    assert d.stop and d.kept == 2 and d.met
    # Plateau, patience 3: the lowest validation loss is kept, whether or not the criteria held there
    # (epoch 6), and the fold stops 3 epochs after it.
    assert [decide(val_loss[:e], met[:e], "plateau", 3, 9).stop for e in range(1, 10)] == [False] * 8 + [True]
    d = decide(val_loss[:5], met[:5], "plateau", 3, 9)
    assert d == Decision(False, 4, True, "waiting for 2 more epoch(s) without a lower validation loss")
    d = decide(val_loss, met, "plateau", 3, 9)
    assert d.kept == 6 and not d.met
    assert d.reason == "criteria met (first in epoch 2); no lower validation loss in the 3 epochs after epoch 6"
    d = decide(val_loss, met, "plateau", 6, 9)
    assert d.stop and d.kept == 6 and "max_epochs reached" in d.reason
    # The criteria are necessary: without them no plateau stops the fold; at max_epochs the lowest
    # validation loss is kept (a NaN epoch never wins).
    assert not decide([0.3, 0.1, 0.2, 0.25, 0.3], [0] * 5, "plateau", 2, 10).stop
    d = decide([0.3, 0.1, float("nan"), 0.2], [0, 0, 0, 0], "plateau", 2, 4)
    assert d == Decision(True, 2, False, "max_epochs reached, criteria never met: the lowest validation loss kept")
    d = decide([0.3, 0.1, 0.2], [0, 0, 0], "paper", 2, 3)
    assert d.stop and d.kept == 3 and not d.met  # the paper keeps the last epoch's model
    assert decide([], [], "plateau", 5, 10) == Decision(False, 0, False, "no epoch yet")
    with pytest.raises(ValueError, match="unknown stopping rule 'early'"):
        decide([0.1], [1], "early", 1, 2)


# --- checkpoints ----------------------------------------------------------------------------------


def _state(epoch):
    return checkpoint.State(epoch, [np.full((2, 2), epoch, np.float32)], [np.int64(epoch), np.ones(3) * epoch],
                            {"loss": [0.5] * epoch})


def test_checkpoints_atomic_keep_two_and_refuse_other_params(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / ".epoch_0003.h5.999.tmp").write_bytes(b"half a file from a killed writer")
    for e in (1, 2, 3):
        checkpoint.save(d, _state(e), params_hash="abc", fold=2, rng_keys={"seed": 1})
    assert sorted(p.name for p in d.iterdir()) == ["epoch_0002.h5", "epoch_0003.h5"]
    got = checkpoint.load_latest(d, params_hash="abc", fold=2)
    assert got.epoch == 3 and got.weights[0][0, 0] == 3 and got.optimizer[0] == 3
    assert got.history["loss"] == [0.5] * 3
    (d / "epoch_0003.h5").write_bytes(b"damaged")  # not possible through save(); fall back anyway
    assert checkpoint.load_latest(d, params_hash="abc", fold=2).epoch == 2
    assert checkpoint.load_latest(d, params_hash="other", fold=2) is None
    assert not d.exists()  # stale checkpoints are cleared, the fold starts afresh


# --- training a fold in-process: NaN stops it, the last good checkpoint stays ---------------------


@pytest.fixture(scope="module")
def toy():
    images, log_m = toy_images(10, pixels=24, seed=7)
    return images, log_m, assign_folds(log_m, 3)


def test_nan_loss_stops_the_fold_and_keeps_the_last_good_checkpoint(tmp_path, toy):
    images, log_m, folds = toy
    params = load_params("params/ci.yaml", ["train.max_epochs=3", *IN_PROCESS])
    good = train_fold(0, images, log_m, folds, params, tmp_path)
    assert good.status == "done" and good.pred.shape == ((folds == 0).sum(), 24) and good.epochs_trained == 3
    assert len(good.history["loss"]) == 3 and np.isfinite(good.pred).all()
    # The plateau rule keeps the lowest validation loss; the criteria are never met in 3 epochs here.
    assert good.epoch_chosen == np.argmin(good.history["val_loss"]) + 1 and not good.criteria_met
    ck = checkpoint_dir(tmp_path, 0)
    (ck / "epoch_0003.h5").unlink()  # as if killed during epoch 3: resume from epoch 2...
    bad = log_m.copy()
    bad[np.flatnonzero(folds == 2)[0]] = np.nan  # ...on a training set with a NaN target
    res = train_fold(0, images, bad, folds, params, tmp_path)
    assert res.status == "failed" and res.pred is None and res.epoch_chosen == 2
    assert "diverged (loss nan) in epoch 3" in res.message and f"Last good checkpoint: epoch 2 in {ck}" in res.message
    assert sorted(p.name for p in ck.iterdir()) == ["epoch_0002.h5"]  # nothing written for the NaN epoch
    assert checkpoint.load_latest(ck, params_hash=params.stage_hash("train"), fold=0).epoch == 2
    # The failure reaches the store with its reason; the fold is retried by the next run.
    write_toy_store(tmp_path, params, images, log_m, folds)
    write_result(tmp_path, res, params.stage_hash("train"))
    summary = merge(tmp_path, params, world(), n_clusters=10, n_views=24, log=None)
    assert summary["done"] == 0 and "diverged" in summary["failed"][0]
    with Store.read(tmp_path) as s:
        assert s.file["train/done"][0] == FAILED and np.isnan(s.file["train/pred_log_m500c"][...]).all()


def test_each_rule_keeps_the_model_of_its_epoch(tmp_path, toy):
    images, log_m, folds = toy
    test_x = make_views(images[folds == 0])
    always = ["train.stop_max_abs_delta=100", "train.stop_max_abs_median=100", "train.stop_min_slope=1e-9",
              "train.max_epochs=8", "train.patience=2", *IN_PROCESS]
    for rule in ("paper", "plateau"):
        params = load_params("params/ci.yaml", [*always, f"train.stopping={rule}"])
        per_epoch = []
        res = train_fold(0, images, log_m, folds, params, tmp_path / rule,
                         on_epoch=lambda epoch, model: per_epoch.append(predict_log_m500c(model, test_x)))
        val_loss = np.array(res.history["val_loss"])
        assert res.status == "done" and res.criteria_met and len(per_epoch) == res.epochs_trained == val_loss.size
        if rule == "paper":  # criteria met at once: the first epoch is kept
            assert res.epoch_chosen == res.epochs_trained == 1
        else:  # the lowest validation loss, and `patience` epochs after it (or max_epochs)
            assert res.epoch_chosen == np.argmin(val_loss) + 1
            assert res.epochs_trained == min(res.epoch_chosen + 2, 8)
        # The stored model and its test predictions are those of the kept epoch, not of the last.
        np.testing.assert_array_equal(res.pred, per_epoch[res.epoch_chosen - 1])
        np.testing.assert_array_equal(predict_log_m500c(load_fold_model(tmp_path / rule, 0), test_x), res.pred)


def test_merge_waits_while_another_process_writes_the_store(tmp_path, toy):
    images, log_m, folds = toy
    params = load_params("params/ci.yaml", IN_PROCESS)
    write_toy_store(tmp_path, params, images, log_m, folds)
    res = train_fold(1, images, log_m, folds, params, tmp_path)
    write_result(tmp_path, res, params.stage_hash("train"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, h5py; from pathlib import Path; from hpcmass.store import writer_lock\n"
        f"p = Path({str(store_path(tmp_path))!r})\n"
        "with writer_lock(p, 'observe'), h5py.File(p, 'a'):\n"
        "    print('holding', flush=True); sys.stdin.readline(); time.sleep(1.5)\n")],
        env=base_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(StoreBusyError, match="being written by pid"):
        merge(tmp_path, params, world(), n_clusters=10, n_views=24, log=None, wait_s=0.1)
    holder.stdin.write("release\n")
    holder.stdin.flush()  # the holder lets go 1.5 s from now, while merge waits
    t0 = time.monotonic()
    summary = merge(tmp_path, params, world(), n_clusters=10, n_views=24, log=None, wait_s=60)
    assert holder.wait(30) == 0 and time.monotonic() - t0 > 1
    assert summary["done"] == 1
    with Store.read(tmp_path) as s:
        pred = s.file["train/pred_log_m500c"][...]
        np.testing.assert_array_equal(pred[folds == 1], res.pred)
        assert np.isnan(pred[folds != 1]).all() and s.file["train/epoch_chosen"][1] == res.epoch_chosen
        np.testing.assert_allclose(s.file["train/history_loss"][1], res.history["loss"], rtol=1e-6)
    assert retry_busy(lambda: 42) == 42


# --- the command: folds as separate processes, SLURM array index, mpirun round-robin --------------


def _toy_workdir(path, n=10, pixels=24, seed=8):
    images, log_m = toy_images(n, pixels=pixels, seed=seed)
    write_toy_store(path, load_params("params/ci.yaml"), images, log_m)
    return images, log_m


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy store trained on all folds: folds 0 and 1 as concurrent jobs (like SLURM array tasks),
    then `hpcmass train` for the rest."""
    work = tmp_path_factory.mktemp("trained")
    env = base_env(work)
    images, log_m = _toy_workdir(work)
    hpcmass("dataset", *CI, "--workdir", work, env=env, check=True)
    cmd = [sys.executable, "-m", "hpcmass", "train", *CI, "--workdir", str(work)]
    jobs = [subprocess.Popen(cmd, env={**env, "SLURM_ARRAY_TASK_ID": "0"}, cwd=ROOT, stderr=subprocess.PIPE,
                             text=True),
            subprocess.Popen(cmd + ["--fold", "1"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)]
    logs = [j.communicate(timeout=300)[1] for j in jobs]
    assert [j.returncode for j in jobs] == [0, 0], logs
    rest = hpcmass("train", *CI, "--workdir", work, env=env, check=True)
    return work, images, log_m, logs, rest.stderr


def test_all_folds_predict_every_view_of_every_cluster_once(trained):
    work, images, log_m, logs, rest = trained
    assert "1 fold(s) requested, 1 to train" in logs[0] and "fold 0 epoch 2/2" in logs[0]
    assert "fold 1 epoch 2/2" in logs[1] and "fold 0 epoch" not in logs[1]
    assert "3 fold(s) requested, 1 to train (2 already done)" in rest and "fold 2 epoch 1/2" in rest
    params = load_params("params/ci.yaml")
    with Store.read(work) as s:
        s.require_complete("train")
        g = s.file["train"]
        folds = s.file["dataset/fold"][...]
        pred = g["pred_log_m500c"][...]
        assert pred.shape == (10, 24) and np.isfinite(pred).all() and g.attrs["unit"] == "fold"
        # Two epochs, criteria never met: the plateau rule keeps each fold's lower validation loss.
        assert list(g["epochs_trained"][...]) == [2, 2, 2] and list(g["criteria_met"][...]) == [0, 0, 0]
        np.testing.assert_array_equal(g["epoch_chosen"][...], np.nanargmin(g["history_val_loss"][...], axis=1) + 1)
        assert list(g["ranks"][...]) == [1, 1, 1] and g.attrs["params_hash"] == params.stage_hash("train")
        assert np.isfinite(g["history_loss"][:, :2]).all()
    tested = []
    for k in range(3):
        res = read_result(work, k, params.stage_hash("train"))
        np.testing.assert_array_equal(res["test_clusters"], np.flatnonzero(folds == k))
        np.testing.assert_array_equal(pred[res["test_clusters"]], res["pred_log_m500c"])
        tested.extend(res["test_clusters"])
        # The stored predictions are the kept model's, view by view.
        model = load_fold_model(work, k)
        np.testing.assert_allclose(predict_log_m500c(model, make_views(images[folds == k])), pred[folds == k],
                                   rtol=1e-5)
    assert sorted(tested) == list(range(10))  # each cluster in exactly one test fold: 24 predictions each
    again = hpcmass("train", *CI, "--workdir", work, env=base_env(work))
    assert again.returncode == 0 and "0 to train (3 already done)" in again.stderr


@pytest.mark.mpi
def test_mpirun_ranks_take_folds_round_robin_with_the_same_results(trained, tmp_path):
    work = trained[0]
    _toy_workdir(tmp_path)
    env = base_env(tmp_path)
    hpcmass("dataset", *CI, "--workdir", tmp_path, env=env, check=True)
    proc = mpirun(2, "-m", "hpcmass", "train", *CI, "--workdir", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "fold 0 (1/2 on this rank)" in proc.stderr and "fold 2 (2/2 on this rank)" in proc.stderr
    with Store.read(work) as a, Store.read(tmp_path) as b:
        b.require_complete("train")
        # Each fold trained alone on its rank: the same models as one process per fold (no averaging
        # across folds); equal up to the thread layout of the convolutions under mpirun's core binding.
        np.testing.assert_allclose(b.file["train/pred_log_m500c"][...], a.file["train/pred_log_m500c"][...],
                                   atol=1e-4)
    # --restart-from train discards the stage, its checkpoints and fold results, then trains what is asked.
    again = hpcmass("train", *CI, "--workdir", tmp_path, "--restart-from", "train", "--fold", "0", env=env, check=True)
    assert "1 fold(s) requested, 1 to train;" in again.stderr and "fold 0 epoch 1/2" in again.stderr
    with Store.read(tmp_path) as s:
        assert list(s.file["train/done"][...]) == [1, 0, 0]
    assert not (tmp_path / "train" / "fold_01").exists()


def _latest_epoch(ck):
    return max((int(p.name[6:10]) for p in ck.glob("epoch_*.h5")), default=0)


def _interrupt(cmd, work, sig, after_epoch):
    """Start training, send ``sig`` once the checkpoint of ``after_epoch`` exists; returns (rc, stderr)."""
    proc = subprocess.Popen([sys.executable, *cmd, "--workdir", str(work)], env=base_env(work), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    ck, deadline = checkpoint_dir(work, 0), time.monotonic() + 120
    while _latest_epoch(ck) < after_epoch and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    return proc.wait(60), proc.stderr.read()


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    sets = ["--set", "train.max_epochs=12", "--set", "train.stop_min_slope=100"]  # never stops early
    runs = {}
    for name in ("straight", "interrupted"):
        runs[name] = work = tmp_path / name
        _toy_workdir(work, seed=9)
        hpcmass("dataset", *CI, "--workdir", work, env=base_env(work), check=True)
    cmd = ["-m", "hpcmass", "train", *CI, *sets, "--fold", "0"]
    hpcmass(*cmd[2:], "--workdir", runs["straight"], env=base_env(tmp_path), check=True)
    work, ck = runs["interrupted"], checkpoint_dir(runs["interrupted"], 0)
    # SIGKILL at any moment: the last complete checkpoint survives.
    rc, _ = _interrupt(cmd, work, signal.SIGKILL, after_epoch=3)
    assert rc == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = _latest_epoch(ck)
    assert 3 <= killed_at < 12 and not result_path(work, 0).exists()
    # SIGUSR1 (SLURM's time-limit warning): stop after the epoch in hand, exit 75 for a requeue.
    rc, err = _interrupt(cmd, work, signal.SIGUSR1, after_epoch=killed_at + 2)
    assert rc == 75, err
    stopped_at = _latest_epoch(ck)
    assert f"fold 0: resuming after epoch {killed_at}" in err and f"fold 0 epoch {killed_at + 1}/12" in err
    assert f"stopped after epoch {stopped_at} on SIGUSR1" in err and stopped_at < 12
    assert not result_path(work, 0).exists()
    resumed = hpcmass(*cmd[2:], "--workdir", work, env=base_env(tmp_path), check=True)
    assert f"fold 0: resuming after epoch {stopped_at}" in resumed.stderr
    assert f"fold 0 epoch {stopped_at + 1}/12" in resumed.stderr and "fold 0 epoch 1/12" not in resumed.stderr
    a, b = load_fold_model(runs["straight"], 0), load_fold_model(work, 0)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)  # deterministic ops (params/ci.yaml): bit for bit
    with Store.read(runs["straight"]) as s1, Store.read(work) as s2:
        np.testing.assert_array_equal(s1.file["train/history_loss"][0], s2.file["train/history_loss"][0])
        # Criteria never met: the lowest validation loss is kept; its weights came through the checkpoints.
        kept = s2.file["train/epoch_chosen"][0]
        assert kept == np.nanargmin(s2.file["train/history_val_loss"][0]) + 1 == s1.file["train/epoch_chosen"][0]
        np.testing.assert_array_equal(s1.file["train/pred_log_m500c"][...], s2.file["train/pred_log_m500c"][...])


# --- folds stacked (train.stack_folds) --------------------------------------------------------------


def test_stacked_towers_predict_as_each_folds_model():
    rng = np.random.default_rng(1)
    for pixels, bands in ((24, 1), (128, 1), (24, 3)):
        models = []
        for seed in range(3):
            tf_keras.utils.set_random_seed(seed)
            models.append(build_model(pixels, "log1p", bands=bands))
        towers = stack.Stack([m.get_weights() for m in models], [None] * 3, "log1p", 5e-4)
        views = [rng.poisson(3.0, (n, bands, pixels, pixels)).astype(np.float32) for n in (5, 7, 3)]  # padded to 7
        for model, v, got in zip(models, views, towers.predict(views), strict=True):
            np.testing.assert_allclose(got, predict_log_m500c(model, v), rtol=0, atol=2e-7)
        for model, w in zip(models, towers.weights(), strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), w, strict=True))


def test_stacked_adam_is_keras_adam_for_each_fold():
    rng = np.random.default_rng(2)
    start = rng.normal(size=(2, 3, 4)).astype(np.float32)
    grads = rng.normal(size=(5, 2, 3, 4)).astype(np.float32)
    active = np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1]], bool)  # fold 1 sits out step 2, fold 0 step 4
    var, m, v = tf.Variable(start), tf.Variable(np.zeros_like(start)), tf.Variable(np.zeros_like(start))
    steps = tf.Variable(np.zeros(2, np.int64))
    for g, a in zip(grads, active, strict=True):
        stack.adam_update([var], [m], [v], steps, [tf.constant(g)], tf.constant(5e-4, tf.float32), tf.constant(a))
    assert list(steps.numpy()) == [4, 4]
    for fold in range(2):
        ref = tf.Variable(start[fold])
        adam = tf_keras.optimizers.Adam(learning_rate=5e-4)
        for g, a in zip(grads, active, strict=True):
            if a[fold]:
                adam.apply_gradients([(tf.constant(g[fold]), ref)])
        np.testing.assert_array_equal(var.numpy()[fold], ref.numpy())


@pytest.mark.parametrize("bands", [1, 3])
def test_stacked_training_is_unstacked_training_without_dropout(tmp_path, toy, monkeypatch, bands):
    """With dropout off nothing random is left: the stack must train each fold as train_fold does
    (same initial weights, data order, batches, loss and Adam), up to float rounding; with one energy
    band or three."""
    images, log_m, folds = toy
    three = ["observe.bands=[[0.5, 1.2], [1.2, 2.5], [2.5, 7.0]]"] if bands == 3 else []
    if bands == 3:
        images = toy_images(10, pixels=24, seed=7, bands=3)[0]
    params = load_params("params/ci.yaml", ["train.max_epochs=4", "train.stop_min_slope=100", *IN_PROCESS, *three])
    monkeypatch.setattr("hpcmass.train.model.DROPOUT", 0.0)
    monkeypatch.setattr(stack, "DROPOUT", 0.0)
    alone = [train_fold(k, images, log_m, folds, params, tmp_path / "alone") for k in range(3)]
    stacked = sorted(stack.train_stack([0, 1, 2], images, log_m, folds, params, tmp_path / "stacked"),
                     key=lambda r: r.fold)
    for a, b in zip(alone, stacked, strict=True):
        assert (b.status, b.epochs_trained, b.epoch_chosen) == ("done", 4, a.epoch_chosen)
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-3)
        np.testing.assert_allclose(b.pred, a.pred, atol=1e-4)
        np.testing.assert_array_equal(predict_log_m500c(load_fold_model(tmp_path / "stacked", b.fold),
                                                        make_views(images[folds == b.fold])).reshape(b.pred.shape),
                                      b.pred)


def test_stacked_training_matches_unstacked_in_distribution(tmp_path, toy):
    """With dropout the masks differ (stateless draws against Keras's generators): the learning
    curves and test scatter must agree within the spread that dropout itself causes."""
    images, log_m, folds = toy
    params = load_params("params/ci.yaml", ["train.max_epochs=15", "train.stop_min_slope=100", *IN_PROCESS])
    alone = [train_fold(k, images, log_m, folds, params, tmp_path / "alone") for k in range(3)]
    stacked = sorted(stack.train_stack([0, 1, 2], images, log_m, folds, params, tmp_path / "stacked"),
                     key=lambda r: r.fold)
    ratio = np.log([np.array(b.history["loss"][5:]) / a.history["loss"][5:] for a, b in zip(alone, stacked)])
    assert abs(np.mean(ratio)) < np.log(1.3) and np.std(ratio) < np.log(1.6), ratio
    first = [b.history["loss"][0] / a.history["loss"][0] for a, b in zip(alone, stacked)]
    np.testing.assert_allclose(first, 1, atol=0.15)  # the same start and data: only the dropout masks differ
    truth = np.concatenate([np.repeat(log_m[folds == k], 24) for k in range(3)])
    scatter = [np.sqrt(np.mean((np.concatenate([r.pred.ravel() for r in runs]) - truth) ** 2))
               for runs in (alone, stacked)]
    assert 0.7 < scatter[1] / scatter[0] < 1.4, scatter


def test_stacked_folds_leave_the_stack_and_resume_bit_for_bit(tmp_path):
    """Each fold stops on its own (plateau rule with the criteria always met, patience 2) and the
    rest train on as a smaller stack; SIGKILL, even between two folds' checkpoints, and a rerun give
    the uninterrupted run bit for bit."""
    sets = ["--set", "train.stack_folds=true", "--set", "train.max_epochs=12", "--set", "train.patience=2",
            "--set", "train.stop_max_abs_delta=100", "--set", "train.stop_max_abs_median=100",
            "--set", "train.stop_min_slope=1e-9"]
    runs = {}
    for name in ("straight", "interrupted"):
        runs[name] = work = tmp_path / name
        _toy_workdir(work, seed=9)
        hpcmass("dataset", *CI, "--workdir", work, env=base_env(work), check=True)
    cmd = ["-m", "hpcmass", "train", *CI, *sets]
    straight = hpcmass(*cmd[2:], "--workdir", runs["straight"], env=base_env(tmp_path), check=True).stderr
    assert "training 3 fold(s) stacked: 0, 1, 2" in straight
    with Store.read(runs["straight"]) as s:
        trained = s.file["train/epochs_trained"][...]
        kept = s.file["train/epoch_chosen"][...]
    np.testing.assert_array_equal(trained, np.minimum(kept + 2, 12))
    assert len(set(trained)) > 1, f"every fold stopped after {trained[0]} epochs: nothing left the stack"
    assert re.search(r"training [12] fold\(s\) stacked", straight)
    work = runs["interrupted"]
    rc, _ = _interrupt(cmd, work, signal.SIGKILL, after_epoch=2)
    assert rc == -signal.SIGKILL, "training ended before it could be killed"
    latest = [_latest_epoch(checkpoint_dir(work, k)) for k in range(3)]
    assert not any(result_path(work, k).exists() for k in range(3)) and min(latest) >= 1
    if latest[1] == max(latest):  # as if killed before fold 1's checkpoint of that epoch was written
        (checkpoint_dir(work, 1) / f"epoch_{latest[1]:04d}.h5").unlink()
        latest[1] -= 1
    resumed = hpcmass(*cmd[2:], "--workdir", work, env=base_env(tmp_path), check=True).stderr
    # The folds one epoch ahead step back: the stack resumes together from the epoch all of them have.
    assert f"fold 0: resuming after epoch {min(latest)}" in resumed and "last bits may differ" not in resumed
    with Store.read(runs["straight"]) as s1, Store.read(work) as s2:
        for name in ("pred_log_m500c", "epoch_chosen", "epochs_trained", "history_loss", "history_val_loss"):
            np.testing.assert_array_equal(s1.file[f"train/{name}"][...], s2.file[f"train/{name}"][...])
    for k in range(3):
        a, b = load_fold_model(runs["straight"], k), load_fold_model(work, k)
        assert trainable_parameters(b) == PAPER_PARAMETERS
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)


# --- bad inputs ------------------------------------------------------------------------------------


def test_requested_folds():
    assert requested_folds(None, 3, {}) == [0, 1, 2]
    assert requested_folds(None, 3, {"SLURM_ARRAY_TASK_ID": "2"}) == [2]
    assert requested_folds(1, 3, {"SLURM_ARRAY_TASK_ID": "2"}) == [1]  # --fold wins
    with pytest.raises(ParamsError, match=r"SLURM_ARRAY_TASK_ID 3: expected a fold 0..2"):
        requested_folds(None, 3, {"SLURM_ARRAY_TASK_ID": "3"})
    with pytest.raises(ParamsError, match="SLURM_ARRAY_TASK_ID='x'"):
        requested_folds(None, 3, {"SLURM_ARRAY_TASK_ID": "x"})


def test_train_bad_inputs(tmp_path, env):
    proc = hpcmass("train", *CI, "--workdir", tmp_path, env=env)
    assert proc.returncode == 2 and "no store here; run `hpcmass catalog`" in proc.stderr
    params = load_params("params/ci.yaml")
    images, log_m = toy_images(10, pixels=16, seed=1)
    with Store.open_stage(tmp_path, params, "catalog", world(), n_units=10, unit="cluster") as st:
        st.require("log_m500c")[...] = log_m
        for i in range(10):
            st.mark_done(i)
    proc = hpcmass("train", *CI, "--workdir", tmp_path, env=env)
    assert proc.returncode == 1
    assert "the observe stage has not been run; run `hpcmass observe --params params/ci.yaml`" in proc.stderr
    write_toy_store(tmp_path, params, images, log_m)
    proc = hpcmass("train", *CI, "--workdir", tmp_path, env=env)
    assert proc.returncode == 1 and "run `hpcmass dataset --params params/ci.yaml`" in proc.stderr
    hpcmass("dataset", *CI, "--workdir", tmp_path, env=env, check=True)
    proc = hpcmass("train", *CI, "--workdir", tmp_path, "--fold", "3", env=env)
    assert proc.returncode == 2 and "--fold 3: expected a fold 0..2" in proc.stderr
    proc = hpcmass("train", *CI, "--workdir", tmp_path, "--restart-from", "observe", env=env)
    assert proc.returncode == 2 and "--restart-from observe would discard the train stage's inputs" in proc.stderr
    proc = hpcmass("train", *CI, "--workdir", tmp_path, env=env)
    assert proc.returncode == 2 and "observe.image_pixels = 16: the paper's CNN needs at least 22" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "train")
