"""Training one cross-validation fold: the paper's CNN, a stopping rule, checkpoints, predictions.

:func:`train_fold` is the one training code path, for a single process and for a Horovod group
(:class:`~hpcmass.train.distributed.Group`): each epoch it re-derives the random streams from
(run.seed, fold, epoch), trains on this rank's share of a shuffled epoch of training views,
gathers the validation predictions of all ranks, records the validation loss and the paper's
criteria, asks the stopping rule (:mod:`.stopping`; every rank gets the same answer) whether to
stop and which epoch to keep, and rank 0 checkpoints. A fold that diverges (non-finite loss or
weights) stops at once with a message; its last good checkpoint stays. At the end every rank
takes the kept epoch's weights and rank 0 saves that model and predicts every view of the test fold.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tf_keras

from ..dataset.folds import split
from ..params import Params
from ..seeding import int_seed
from . import checkpoint
from .distributed import Group
from .files import checkpoint_dir, model_path
from .model import build_model, predict_log_m500c, save_model_atomic
from .pipeline import ViewSource, epoch_order, view_ids
from .results import FoldResult
from .stopping import decide, evaluate_params


def _seed_dropout(model, seed: int, fold: int, epoch: int, rank: int) -> None:
    """Re-seed the dropout layers' generators for this epoch (and rank: masks differ across ranks)."""
    dropouts = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dropout)]
    for i, layer in enumerate(dropouts):
        # tf-keras keeps the stateful generator of a BaseRandomLayer here; it is not a model weight.
        layer._random_generator._generator.reset_from_seed(int_seed(seed, "train", fold, epoch, "dropout", i, rank))


def compile_model(model, group: Group, learning_rate: float):
    """Adam (wrapped by Horovod in a group), MSE loss; returns the optimizer with its variables built."""
    optimizer = group.optimizer(tf_keras.optimizers.Adam(learning_rate=learning_rate))
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    return optimizer


def _finite(loss: float, model) -> bool:
    return bool(np.isfinite(loss) and all(np.isfinite(w).all() for w in model.get_weights()))


def initial_model(params: Params, fold: int, pixels: int):
    """Fold ``fold``'s CNN before training: the weights its training starts from (before the output
    bias of ``train.output_bias``), seeded by (run.seed, fold) alone."""
    seed = params.run.seed
    tf_keras.utils.set_random_seed(int_seed(seed, "train", fold, "init"))
    return build_model(pixels, params.dataset.scaling, seed=int_seed(seed, "train", fold, "dropout"))


def train_fold(fold: int, images: np.ndarray, log_m500c: np.ndarray, folds: np.ndarray, params: Params,
               workdir, group: Group = Group(), log=None, stop=lambda: None, on_epoch=None) -> FoldResult:
    """Train fold ``fold`` (resuming from its last checkpoint) and predict its test clusters.

    ``images``: ``(n_clusters, n_axes, P, P)`` counts; ``log_m500c``: targets; ``folds``: each
    cluster's fold. Every rank of ``group`` calls this with the same arguments. ``stop()``
    returning a reason (e.g. a signal name) on any rank ends training after the epoch in hand
    (status "stopped"; the checkpoint resumes it). ``on_epoch(epoch, model)``, if given, is called
    on every rank after each epoch's record (studies of training; never part of the decision).
    """
    tp, seed = params.train, params.run.seed
    n_folds = params.dataset.n_folds
    train_c, val_c, test_c = split(folds, fold, n_folds)
    if train_c.size == 0:
        raise ValueError(f"fold {fold} has no training clusters")
    if tp.deterministic:
        tf.config.experimental.enable_op_determinism()
    params_hash = params.stage_hash("train")
    ck_dir = checkpoint_dir(workdir, fold)
    rng_keys = {"seed": seed, "fold": fold, "data_order": "rng(seed, 'train', fold, epoch)",
                "dropout": "int_seed(seed, 'train', fold, epoch, 'dropout', layer, rank)", "ranks": group.size}

    source = ViewSource(images, log_m500c)
    pixels = source.pixels
    train_ids = view_ids(train_c, source.n_views)
    val_x = source.views(val_c)
    val_true = np.repeat(log_m500c[val_c], source.n_views)

    model = initial_model(params, fold, pixels)
    lr = group.learning_rate(tp.learning_rate, tp.horovod_lr_scaling)
    optimizer = compile_model(model, group, lr)
    # The target is log10 M itself (as in the paper), ~14: by default start the output at the training
    # mean rather than at 0, so the first epochs learn the mass dependence instead of the offset.
    if tp.output_bias == "mean":
        model.get_layer("log_m500c").bias.assign([float(np.mean(log_m500c[train_c]))])

    state = checkpoint.load_latest(ck_dir, params_hash=params_hash, fold=fold, log=log)
    history: dict[str, list[float]] = {k: [] for k in checkpoint.HISTORY_KEYS}
    start, kept_weights = 0, []
    if state is not None:
        model.set_weights(state.weights)
        for var, value in zip(optimizer.variables, state.optimizer, strict=True):
            var.assign(value)
        history, start, kept_weights = state.history, state.epoch, state.kept
        if log:
            log.info("fold %d: resuming after epoch %d from %s", fold, start, ck_dir)
    group.broadcast(model.variables + optimizer.variables)

    def result(status, message, kept, met):
        pred = None
        if status == "done":
            model.set_weights(kept_weights)
            if group.writes:
                save_model_atomic(_inference_copy(model, pixels, params.dataset.scaling), model_path(workdir, fold))
                pred = predict_log_m500c(model, source.views(test_c)).reshape(test_c.size, source.n_views)
        return FoldResult(fold, status, message, test_c, pred, kept, met, history, group.size, lr,
                          len(history["loss"]))

    def decision():
        return decide(history["val_loss"], history["val_met"], tp.stopping, tp.patience, tp.max_epochs)

    now = decision()
    epoch = start
    while not now.stop and epoch < tp.max_epochs:
        epoch += 1
        t0 = time.monotonic()
        _seed_dropout(model, seed, fold, epoch, group.rank)
        ids = epoch_order(train_ids, seed, fold, epoch, group.rank, group.size)
        local_loss = model.fit(source.dataset(ids, tp.batch_size), epochs=1, verbose=0).history["loss"][0]
        gathered = group.allgather((float(local_loss), _finite(local_loss, model)))
        loss = float(np.mean([g[0] for g in gathered]))
        if not all(g[1] for g in gathered):
            last = f"epoch {epoch - 1} in {ck_dir}" if epoch > 1 else "none (diverged in the first epoch)"
            message = (f"fold {fold}: training diverged (loss {loss}) in epoch {epoch}; stopped. Last good "
                       f"checkpoint: {last}. Try a smaller train.learning_rate or another dataset.scaling")
            if log:
                log.error(message)
            return result("failed", message, epoch - 1, False)
        part = predict_log_m500c(model, val_x[group.rank::group.size])
        val_pred = group.gather_rows(part, len(val_x))
        crit = evaluate_params(val_pred, val_true, tp)
        val_loss = float(np.mean((val_pred.astype(np.float64) - val_true) ** 2))
        seconds = time.monotonic() - t0
        for key, value in zip(checkpoint.HISTORY_KEYS, (loss, val_loss, crit.max_abs_delta, crit.median_delta,
                                                        crit.slope, float(crit.met), seconds)):
            history[key].append(value)
        now = decision()
        if now.kept == epoch:
            kept_weights = model.get_weights()
        if group.writes:
            checkpoint.save(ck_dir, checkpoint.State(epoch, model.get_weights(),
                                                     [v.numpy() for v in optimizer.variables], history, kept_weights),
                            params_hash=params_hash, fold=fold, rng_keys=rng_keys)
        if log:
            log.info("fold %d epoch %d/%d: loss %.5f  val loss %.5f  %s  %.1fs", fold, epoch, tp.max_epochs, loss,
                     val_loss, crit.describe(), seconds)
        if on_epoch is not None:
            on_epoch(epoch, model)
        asked = [r for r in group.allgather(stop()) if r]  # every rank must agree to stop
        if asked and not now.stop:
            return result("stopped", f"fold {fold}: stopped after epoch {epoch} on {asked[0]}; its checkpoint "
                                     f"resumes it", now.kept, False)
    return result("done", f"fold {fold}: model of epoch {now.kept} of {epoch} kept ({tp.stopping} rule: "
                          f"{now.reason})", now.kept, now.met)


def _inference_copy(model, pixels: int, scaling: str):
    """The trained weights in a fresh, uncompiled model: the stored file has no optimizer (Horovod's
    wrapped optimizer class does not serialise) and loads anywhere."""
    kept = build_model(pixels, scaling)
    kept.set_weights(model.get_weights())
    return kept
