"""Training one cross-validation fold: the paper's CNN, a stopping rule, checkpoints, predictions.

:func:`train_fold` trains one fold, in a single process or in a Horovod group
(:class:`~hpcmass.train.distributed.Group`); :mod:`.stack` trains several side by side. Both keep
each fold's record in a :class:`FoldRun`. Each epoch :func:`train_fold` re-derives the random
streams from (run.seed, fold, epoch), trains on this rank's share of a shuffled epoch of training
views, gathers the validation predictions of all ranks, records the validation loss and the
paper's criteria, asks the stopping rule (:mod:`.stopping`; every rank gets the same answer)
whether to stop and which epoch to keep, and rank 0 checkpoints. A fold that diverges
(non-finite loss or weights) stops at once with a message; its last good checkpoint stays. At the
end rank 0 saves the kept epoch's model and predicts every view of the test fold.
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
    return build_model(pixels, params.dataset.scaling, seed=int_seed(seed, "train", fold, "dropout"),
                       bands=len(params.observe.bands))


class FoldRun:
    """One fold's record, whoever trains its epochs (:func:`train_fold`, or a stack of folds in
    :func:`hpcmass.train.stack.train_stack`): its clusters and views, per-epoch history, stopping
    decision, the kept epoch's weights, checkpoints and result. Every rank of ``group`` holds one."""

    def __init__(self, fold: int, source: ViewSource, log_m500c: np.ndarray, folds: np.ndarray, params: Params,
                 workdir, group: Group = Group(), log=None, dropout_keys: str = ""):
        self.fold, self.source, self.params, self.workdir, self.group, self.log = fold, source, params, workdir, group, log
        self.train_c, self.val_c, self.test_c = split(folds, fold, params.dataset.n_folds)
        if self.train_c.size == 0:
            raise ValueError(f"fold {fold} has no training clusters")
        self.train_mean = float(np.mean(log_m500c[self.train_c]))
        self.train_ids = view_ids(self.train_c, source.n_views)
        self.val_x = source.views(self.val_c)
        self.val_true = np.repeat(log_m500c[self.val_c], source.n_views)
        self.params_hash = params.stage_hash("train")
        self.ck_dir = checkpoint_dir(workdir, fold)
        self.rng_keys = {"seed": params.run.seed, "fold": fold, "data_order": "rng(seed, 'train', fold, epoch)",
                         "dropout": dropout_keys, "ranks": group.size}
        self.learning_rate = group.learning_rate(params.train.learning_rate, params.train.horovod_lr_scaling)
        self.history: dict[str, list[float]] = {k: [] for k in checkpoint.HISTORY_KEYS}
        self.epoch, self.kept_weights = 0, []
        self.decision = self._decide()

    def initial_model(self):
        """The fold's CNN before training (:func:`initial_model`), its output bias as ``train.output_bias`` says."""
        model = initial_model(self.params, self.fold, self.source.pixels)
        # The target is log10 M itself (as in the paper), ~14: by default start the output at the training
        # mean rather than at 0, so the first epochs learn the mass dependence instead of the offset.
        if self.params.train.output_bias == "mean":
            model.get_layer("log_m500c").bias.assign([self.train_mean])
        return model

    def resume(self, at_most: int | None = None) -> checkpoint.State | None:
        """The newest checkpoint of these params (of an epoch ``<= at_most``, if given), or None; the
        history, epoch and kept weights are taken from it."""
        state = checkpoint.load_latest(self.ck_dir, params_hash=self.params_hash, fold=self.fold, log=self.log,
                                       at_most=at_most)
        if state is not None:
            self.history, self.epoch, self.kept_weights = state.history, state.epoch, state.kept
            self.decision = self._decide()
            if self.log:
                self.log.info("fold %d: resuming after epoch %d from %s", self.fold, self.epoch, self.ck_dir)
        return state

    def _decide(self):
        tp = self.params.train
        return decide(self.history["val_loss"], self.history["val_met"], tp.stopping, tp.patience, tp.max_epochs)

    @property
    def training(self) -> bool:
        """More epochs to train: the stopping rule has not stopped the fold, nor has train.max_epochs."""
        return not self.decision.stop and self.epoch < self.params.train.max_epochs

    def record(self, loss: float, val_pred: np.ndarray, seconds: float, weights, optimizer) -> None:
        """Record epoch ``self.epoch + 1`` (training loss, validation predictions), decide, and keep
        and checkpoint its weights (``weights()``, ``optimizer()``: that epoch's arrays)."""
        tp = self.params.train
        self.epoch += 1
        crit = evaluate_params(val_pred, self.val_true, tp)
        val_loss = float(np.mean((val_pred.astype(np.float64) - self.val_true) ** 2))
        for key, value in zip(checkpoint.HISTORY_KEYS, (loss, val_loss, crit.max_abs_delta, crit.median_delta,
                                                        crit.slope, float(crit.met), seconds)):
            self.history[key].append(value)
        self.decision = self._decide()
        current = weights()
        if self.decision.kept == self.epoch:
            self.kept_weights = current
        if self.group.writes:
            checkpoint.save(self.ck_dir, checkpoint.State(self.epoch, current, optimizer(), self.history,
                                                          self.kept_weights),
                            params_hash=self.params_hash, fold=self.fold, rng_keys=self.rng_keys)
        if self.log:
            self.log.info("fold %d epoch %d/%d: loss %.5f  val loss %.5f  %s  %.1fs", self.fold, self.epoch,
                          tp.max_epochs, loss, val_loss, crit.describe(), seconds)

    def result(self, status: str, message: str, kept: int, met: bool) -> FoldResult:
        """The fold's outcome; for "done", rank 0 saves the kept epoch's model and predicts the test fold."""
        pred = None
        if status == "done" and self.group.writes:
            model = build_model(self.source.pixels, self.params.dataset.scaling, bands=self.source.bands)
            model.set_weights(self.kept_weights)
            save_model_atomic(model, model_path(self.workdir, self.fold))
            pred = predict_log_m500c(model, self.source.views(self.test_c)).reshape(self.test_c.size,
                                                                                    self.source.n_views)
        return FoldResult(self.fold, status, message, self.test_c, pred, kept, met, self.history, self.group.size,
                          self.learning_rate, len(self.history["loss"]))

    def done(self) -> FoldResult:
        """The result once training has ended: the stopping rule's kept epoch."""
        now = self.decision
        return self.result("done", f"fold {self.fold}: model of epoch {now.kept} of {self.epoch} kept "
                                   f"({self.params.train.stopping} rule: {now.reason})", now.kept, now.met)

    def diverged(self, loss: float) -> FoldResult:
        """Epoch ``self.epoch + 1`` gave a non-finite loss or weights: the fold fails, nothing is checkpointed."""
        epoch = self.epoch + 1
        last = f"epoch {epoch - 1} in {self.ck_dir}" if epoch > 1 else "none (diverged in the first epoch)"
        message = (f"fold {self.fold}: training diverged (loss {loss}) in epoch {epoch}; stopped. Last good "
                   f"checkpoint: {last}. Try a smaller train.learning_rate or another dataset.scaling")
        if self.log:
            self.log.error(message)
        return self.result("failed", message, epoch - 1, False)

    def stopped(self, reason: str) -> FoldResult:
        """Stopped on request (a signal) after its last epoch: resumable from the checkpoint."""
        return self.result("stopped", f"fold {self.fold}: stopped after epoch {self.epoch} on {reason}; its "
                                      f"checkpoint resumes it", self.decision.kept, False)


def train_fold(fold: int, images: np.ndarray, log_m500c: np.ndarray, folds: np.ndarray, params: Params,
               workdir, group: Group = Group(), log=None, stop=lambda: None, on_epoch=None) -> FoldResult:
    """Train fold ``fold`` (resuming from its last checkpoint) and predict its test clusters.

    ``images``: ``(n_clusters, n_axes, bands, P, P)`` counts; ``log_m500c``: targets; ``folds``: each
    cluster's fold. Every rank of ``group`` calls this with the same arguments. ``stop()``
    returning a reason (e.g. a signal name) on any rank ends training after the epoch in hand
    (status "stopped"; the checkpoint resumes it). ``on_epoch(epoch, model)``, if given, is called
    on every rank after each epoch's record (studies of training; never part of the decision).
    """
    tp, seed = params.train, params.run.seed
    if tp.deterministic:
        tf.config.experimental.enable_op_determinism()
    run = FoldRun(fold, ViewSource(images, log_m500c), log_m500c, folds, params, workdir, group, log,
                  dropout_keys="int_seed(seed, 'train', fold, epoch, 'dropout', layer, rank)")
    model = run.initial_model()
    optimizer = compile_model(model, group, run.learning_rate)
    state = run.resume()
    if state is not None:
        model.set_weights(state.weights)
        for var, value in zip(optimizer.variables, state.optimizer, strict=True):
            var.assign(value)
    group.broadcast(model.variables + optimizer.variables)

    while run.training:
        epoch = run.epoch + 1
        t0 = time.monotonic()
        _seed_dropout(model, seed, fold, epoch, group.rank)
        ids = epoch_order(run.train_ids, seed, fold, epoch, group.rank, group.size)
        local_loss = model.fit(run.source.dataset(ids, tp.batch_size), epochs=1, verbose=0).history["loss"][0]
        gathered = group.allgather((float(local_loss), _finite(local_loss, model)))
        loss = float(np.mean([g[0] for g in gathered]))
        if not all(g[1] for g in gathered):
            return run.diverged(loss)
        part = predict_log_m500c(model, run.val_x[group.rank::group.size])
        val_pred = group.gather_rows(part, len(run.val_x))
        run.record(loss, val_pred, time.monotonic() - t0, model.get_weights,
                   lambda: [v.numpy() for v in optimizer.variables])
        if on_epoch is not None:
            on_epoch(epoch, model)
        asked = [r for r in group.allgather(stop()) if r]  # every rank must agree to stop
        if asked and run.training:
            return run.stopped(asked[0])
    return run.done()
