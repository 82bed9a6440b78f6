"""Folds stacked (``train.stack_folds``): the CNNs of several folds trained as one model of K towers.

A 58k-parameter CNN leaves a GPU mostly idle, so rather than one GPU per fold the folds a process
trains run side by side: their weights are stacked along a leading fold axis, the convolutions
become grouped convolutions (one group per fold: its energy bands, then its feature maps) and the
dense layers batched matrix products. Nothing mixes
towers: each fold keeps its own initial weights (:func:`~hpcmass.train.fold.initial_model`, the
same seeds as unstacked), data order (:func:`~hpcmass.train.pipeline.epoch_order`), dropout
masks, Adam state, stopping rule, checkpoints and result (:class:`~hpcmass.train.fold.FoldRun`).

Each step takes one batch of every fold (a fold whose epoch has fewer batches sits the last steps
out: its weights, moments and step count stay as they are). Adam is Keras's, per fold
(:func:`adam_update`). Dropout masks are stateless draws keyed by (run.seed, fold, epoch, layer,
step), so a rerun or a resume repeats them (and the training, bit for bit with
``train.deterministic``). They differ from the masks of unstacked training (Keras's stateful
generators), so stacked and unstacked folds agree in distribution, not bit for bit. Trained alone
(K = 1), a fold's predictions differed from those of the same fold in a stack of 3 by 1e-6 dex.

A fold that stops leaves the stack and the rest go on as a smaller one. On CPU the step is not
faster stacked; a stack saves per-epoch work (one pipeline, one validation call), 1.15× on the
demo (README). On one H200 a JAX port of these towers (``benchmarks/bench_gpu.py``) trained ten
paper-scale folds at 2.4–2.9× the images/s of one fold stepped batch by batch (README).
"""

from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from ..seeding import int_seed
from . import checkpoint
from .fold import FoldRun
from .model import DROPOUT
from .pipeline import ViewSource, epoch_order
from .scaling import scale_images

#: Adam's constants, as tf-keras's defaults (``tf_keras.optimizers.Adam``).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7
#: The dense kernels (indices in the paper model's weights) whose inputs dropout masks: dense200's
#: (after global average pooling) and dense100's (after dense200).
DROPOUT_BEFORE = (6, 8)
#: Images (folds × batch) per inference call: bounds the first convolution's output (1 MB per image).
INFERENCE_IMAGES = 256


def dropout_seeds(seed: int, fold: int, epoch: int) -> list[int]:
    """The per-layer keys of a fold's dropout masks in one epoch (a mask also depends on the step)."""
    return [int_seed(seed, "train", fold, epoch, "dropout", layer) for layer in range(len(DROPOUT_BEFORE))]


def forward(weights, counts, scaling: str, masks=None):
    """Predicted log10 M ``(K, B)`` of raw counts ``(K, B, bands, P, P)``, tower k with fold k's weights.

    ``weights``: the paper model's 14 arrays (``model.get_weights()`` order), each with a leading
    fold axis. ``masks``: the dropout masks of the inputs of :data:`DROPOUT_BEFORE`, ``(K, B, 64)``
    and ``(K, B, 200)`` (0 or 1/(1-rate)), None for inference.
    """
    k, b, bands, p = counts.shape[0], tf.shape(counts)[1], counts.shape[2], counts.shape[-1]
    # (B, P, P, K * bands): fold k's bands are channels k * bands ... (k + 1) * bands - 1
    x = scale_images(tf.reshape(tf.transpose(counts, [1, 3, 4, 0, 2]), [b, p, p, k * bands]), scaling)
    for i in (0, 2, 4):  # grouped: fold k's output channels see only its own input channels
        w = weights[i]
        grouped = tf.reshape(tf.transpose(w, [1, 2, 3, 0, 4]), [3, 3, w.shape[3], k * w.shape[4]])
        x = tf.nn.conv2d(x, grouped, 1, "VALID") + tf.reshape(weights[i + 1], [-1])
        x = tf.nn.max_pool2d(tf.nn.relu(x), 2, 2, "VALID")
    x = tf.reduce_mean(x, axis=[1, 2])  # global average pool: (B, K * 64)
    x = tf.transpose(tf.reshape(x, [-1, k, weights[4].shape[-1]]), [1, 0, 2])  # (K, B, 64)
    for i in (6, 8, 10, 12):
        if masks is not None and i in DROPOUT_BEFORE:
            x = x * masks[DROPOUT_BEFORE.index(i)]
        x = tf.matmul(x, weights[i]) + weights[i + 1][:, None, :]
        if i < 12:
            x = tf.nn.relu(x)
    return x[..., 0]


def adam_update(variables, moments, velocities, steps, gradients, learning_rate, active) -> None:
    """tf-keras's Adam update, per fold: ``steps`` (K,) counts each fold's updates; a fold not
    ``active`` (K,) is left exactly as it is."""
    local_step = tf.cast(steps + 1, tf.float32)
    alpha = learning_rate * tf.sqrt(1 - tf.pow(BETA_2, local_step)) / (1 - tf.pow(BETA_1, local_step))
    for var, m, v, g in zip(variables, moments, velocities, gradients, strict=True):
        keep = tf.reshape(active, [-1] + [1] * (var.shape.rank - 1))
        m_new = m + (g - m) * (1 - BETA_1)
        v_new = v + (tf.square(g) - v) * (1 - BETA_2)
        a = tf.reshape(alpha, keep.shape)
        var.assign(tf.where(keep, var - (m_new * a) / (tf.sqrt(v_new) + EPSILON), var))
        m.assign(tf.where(keep, m_new, m))
        v.assign(tf.where(keep, v_new, v))
    steps.assign(tf.where(active, steps + 1, steps))


class Stack:
    """The towers of K folds: stacked weights and Adam state as TensorFlow variables.

    ``weights[k]``: fold k's 14 arrays; ``optimizer[k]``: its state as :meth:`optimizer_state`
    returns it, or None for a fresh Adam.
    """

    def __init__(self, weights: list[list[np.ndarray]], optimizer: list[list[np.ndarray] | None], scaling: str,
                 learning_rate: float):
        self.k, self.scaling = len(weights), scaling
        self.variables = [tf.Variable(np.stack(arrays)) for arrays in zip(*weights, strict=True)]
        fresh = [[np.zeros(1, np.int64)] + [np.zeros_like(w) for w in ws] * 2 for ws in weights]
        state = [s if s is not None else f for s, f in zip(optimizer, fresh, strict=True)]
        n = len(self.variables)
        self.steps = tf.Variable(np.concatenate([s[0] for s in state]).astype(np.int64))
        self.moments = [tf.Variable(np.stack([s[1 + i] for s in state])) for i in range(n)]
        self.velocities = [tf.Variable(np.stack([s[1 + n + i] for s in state])) for i in range(n)]
        self.learning_rate = tf.constant(learning_rate, tf.float32)
        self._step = tf.function(self._train_step)
        self._predict = tf.function(lambda counts: forward(self.variables, counts, self.scaling))

    def _train_step(self, counts, targets, sample_weight, seeds):
        """One Adam step of every fold on its batch; ``sample_weight`` (K, B) is 0 for padding; ``seeds``
        (K, layers, 2): each fold's stateless dropout seeds. Returns each fold's mean loss and images."""
        batch = tf.shape(counts)[1]
        widths = [self.variables[i].shape[-2] for i in DROPOUT_BEFORE]
        masks = [tf.stack([tf.cast(tf.random.stateless_uniform([batch, width], seeds[f, j]) >= DROPOUT, tf.float32)
                           for f in range(self.k)]) / (1 - DROPOUT) for j, width in enumerate(widths)]
        images = tf.reduce_sum(sample_weight, axis=1)
        with tf.GradientTape() as tape:
            pred = forward(self.variables, counts, self.scaling, masks)
            per_fold = tf.reduce_sum(sample_weight * tf.square(pred - targets), axis=1) / tf.maximum(images, 1.0)
            total = tf.reduce_sum(per_fold)  # towers share no weight: each fold's gradient is its own loss's
        gradients = tape.gradient(total, self.variables)
        adam_update(self.variables, self.moments, self.velocities, self.steps, gradients, self.learning_rate,
                    images > 0)
        return per_fold, images

    def train_epoch(self, batches) -> np.ndarray:
        """One pass over ``batches`` of (counts, targets, sample_weight, seeds); each fold's mean loss."""
        total, images = np.zeros(self.k), np.zeros(self.k)
        for batch in batches:
            loss, n = self._step(*batch)
            total += loss.numpy() * n.numpy()
            images += n.numpy()
        return total / np.maximum(images, 1)

    def predict(self, views: list[np.ndarray]) -> list[np.ndarray]:
        """log10 M of each fold's raw-count views ``(N_k, bands, P, P)`` (dropout off)."""
        n = max(len(v) for v in views)
        chunk = max(1, INFERENCE_IMAGES // self.k)
        padded = np.zeros((self.k, n, *views[0].shape[1:]), np.float32)
        for f, v in enumerate(views):
            padded[f, : len(v)] = v
        pred = np.concatenate([self._predict(tf.constant(padded[:, i:i + chunk])).numpy()
                               for i in range(0, n, chunk)], axis=1)
        return [pred[f, : len(v)] for f, v in enumerate(views)]

    def weights(self) -> list[list[np.ndarray]]:
        """Each fold's 14 arrays (the paper model's ``get_weights()``)."""
        values = [v.numpy() for v in self.variables]
        return [[a[f] for a in values] for f in range(self.k)]

    def optimizer_state(self) -> list[list[np.ndarray]]:
        """Each fold's Adam state: [step count (1,), first moments..., second moments...]."""
        steps = self.steps.numpy()
        m, v = [x.numpy() for x in self.moments], [x.numpy() for x in self.velocities]
        return [[steps[f:f + 1]] + [a[f] for a in m] + [a[f] for a in v] for f in range(self.k)]


def epoch_batches(source, fold_ids: list[np.ndarray], seeds: list[list[int]], batch_size: int):
    """tf.data batches of one stacked epoch: step s holds batch s of every fold's epoch order
    (``fold_ids[k]``), padded with weight-0 images where a fold has fewer; with the dropout seeds
    (fold k's layer-j key, step s)."""
    k = len(fold_ids)
    steps = max(math.ceil(len(ids) / batch_size) for ids in fold_ids)
    ids = np.zeros((steps, k, batch_size), np.int64)
    weight = np.zeros((steps, k, batch_size), np.float32)
    for f, order in enumerate(fold_ids):  # batch s of a fold: its ids s*B..(s+1)*B, as unstacked training cuts them
        flat_ids, flat_weight = np.zeros(steps * batch_size, np.int64), np.zeros(steps * batch_size, np.float32)
        flat_ids[: len(order)], flat_weight[: len(order)] = order, 1
        ids[:, f], weight[:, f] = flat_ids.reshape(steps, batch_size), flat_weight.reshape(steps, batch_size)
    step_seeds = np.zeros((steps, k, len(DROPOUT_BEFORE), 2), np.int64)
    step_seeds[..., 0] = np.asarray(seeds, np.int64)[None]
    step_seeds[..., 1] = np.arange(steps)[:, None, None]

    def gather(step_ids, step_weight, step_seed):
        counts, targets = source.gather(tf.reshape(step_ids, [-1]))
        return (tf.reshape(counts, [k, batch_size, *source.image_shape]), tf.reshape(targets, [k, batch_size]),
                step_weight, step_seed)

    ds = tf.data.Dataset.from_tensor_slices((ids, weight, step_seeds))
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def train_stack(fold_list: list[int], images: np.ndarray, log_m500c: np.ndarray, folds: np.ndarray, params,
                workdir, log=None, stop=lambda: None):
    """Train ``fold_list`` side by side, each resuming from its own checkpoint; yields each fold's
    :class:`~hpcmass.train.results.FoldResult` as it leaves the stack (done or failed). ``stop()``
    returning a reason ends every fold still training after the epoch in hand (status "stopped").
    A fold's recorded seconds are its stack's epoch time."""
    tp, seed = params.train, params.run.seed
    if tp.deterministic:
        tf.config.experimental.enable_op_determinism()
    source = ViewSource(images, log_m500c)
    runs = [FoldRun(k, source, log_m500c, folds, params, workdir, log=log,
                    dropout_keys="stateless(int_seed(seed, 'train', fold, epoch, 'dropout', layer), step)")
            for k in fold_list]
    # A kill between two folds' checkpoints leaves them one epoch apart: those ahead step back (two
    # checkpoints are kept), so the stack resumes as it ran. Further apart (another rank layout), they
    # resume where they are.
    latest = {r.fold: checkpoint.latest_epoch(r.ck_dir) for r in runs}
    common = min(latest.values())
    weights, optimizer = {}, {}
    for run in runs:
        state = run.resume(at_most=common if latest[run.fold] == common + 1 else None)
        if run.epoch != common and log:
            log.warning("fold %d resumes after epoch %d, the stack's other folds after %d: its last bits may "
                        "differ from an uninterrupted run", run.fold, run.epoch, common)
        weights[run.fold] = state.weights if state else run.initial_model().get_weights()
        optimizer[run.fold] = state.optimizer if state else None
    for run in runs:
        if not run.training:
            yield run.done()
    runs = [r for r in runs if r.training]
    while runs:
        stack = Stack([weights[r.fold] for r in runs], [optimizer[r.fold] for r in runs], params.dataset.scaling,
                      runs[0].learning_rate)
        if log:
            log.info("training %d fold(s) stacked: %s", len(runs), ", ".join(str(r.fold) for r in runs))
        results = []
        while not results:
            t0 = time.monotonic()
            orders = [epoch_order(r.train_ids, seed, r.fold, r.epoch + 1) for r in runs]
            seeds = [dropout_seeds(seed, r.fold, r.epoch + 1) for r in runs]
            losses = stack.train_epoch(epoch_batches(source, orders, seeds, tp.batch_size))
            val_pred = stack.predict([r.val_x for r in runs])
            seconds = time.monotonic() - t0
            ending = []
            for run, loss, pred, w, opt in zip(runs, losses, val_pred, stack.weights(), stack.optimizer_state(),
                                               strict=True):
                weights[run.fold], optimizer[run.fold] = w, opt
                if not (np.isfinite(loss) and all(np.isfinite(a).all() for a in w)):
                    results.append(run.diverged(float(loss)))
                    continue
                run.record(float(loss), pred, seconds, lambda w=w: w, lambda opt=opt: opt)
                if not run.training:
                    ending.append(run)
            # Results only once every fold's checkpoint of this epoch is written (see the resume above).
            results += [run.done() for run in ending]
            runs = [r for r in runs if r.training and r.fold not in {res.fold for res in results}]
            yield from results
            asked = stop()
            if asked:
                for run in runs:
                    yield run.stopped(asked)
                return
