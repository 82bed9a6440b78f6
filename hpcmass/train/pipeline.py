"""The input pipeline: views made on the fly from the in-memory projections by tf.data.

An item is a global view id ``cluster * n_views + view`` (view order: :mod:`hpcmass.images`).
Each epoch's order is a permutation seeded from (run.seed, fold, epoch) — the same whether the
fold runs uninterrupted or resumed, on one rank or many — dealt to ranks for Horovod. The
pipeline batches ids, gathers each image's projection, then makes each image's view with three
batch-wide operations (mirror columns, mirror rows, transpose) kept per image by a select: a few
memory passes per batch (5,000-11,000 images/s of 128² px on one core, >10× the model's training
rate on a CPU); batches are prefetched so the model never waits. Images stay raw counts (float32;
scaled to the reference exposure when the observations' exposures differ): the scaling is the
model's first layer.
"""

from __future__ import annotations

import numpy as np

from ..seeding import rng
from ..images import VIEWS_PER_AXIS, make_views, view_operations


def view_ids(clusters, n_views: int) -> np.ndarray:
    """All view ids of ``clusters``, cluster-major (the order of ``make_views`` on those clusters)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    return (clusters[:, None] * n_views + np.arange(n_views)).reshape(-1)


def epoch_order(ids, seed: int, fold: int, epoch: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """This rank's ids for one epoch: one shuffle for all ranks, dealt round-robin.

    Every rank gets ``len(ids) // size`` ids — the same number of steps on every rank, which
    Horovod's allreduce needs; the few ids left over differ from epoch to epoch.
    """
    order = rng(seed, "train", fold, epoch).permutation(np.asarray(ids))
    return order[rank::size][: len(order) // size]


class ViewSource:
    """Projections ``(n_clusters, n_axes, bands, P, P)`` and targets held in memory as TensorFlow constants."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        import tensorflow as tf

        if images.ndim != 5 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be (clusters, axes, bands, P, P), got shape {images.shape}")
        n_clusters, self.n_axes, self.bands, self.pixels, _ = images.shape
        self.n_views = VIEWS_PER_AXIS * self.n_axes
        self._images = images
        self._projections = tf.constant(images.reshape(n_clusters * self.n_axes, *self.image_shape)
                                        .astype(np.float32, copy=False))
        self._operations = tf.constant(view_operations())
        self._targets = tf.constant(np.asarray(targets, dtype=np.float32))

    def gather(self, ids):
        """Raw-count views (float32) and targets of a batch of view ids."""
        import tensorflow as tf

        cluster, view = ids // self.n_views, ids % self.n_views
        x = tf.gather(self._projections, cluster * self.n_axes + view // VIEWS_PER_AXIS)
        wanted = tf.gather(self._operations, view % VIEWS_PER_AXIS)
        for i, op in enumerate((lambda a: tf.reverse(a, [3]), lambda a: tf.reverse(a, [2]),
                                lambda a: tf.transpose(a, [0, 1, 3, 2]))):
            x = tf.where(tf.reshape(wanted[:, i], (-1, 1, 1, 1)), op(x), x)
        return x, tf.gather(self._targets, cluster)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One image: (bands, P, P)."""
        return self.bands, self.pixels, self.pixels

    def dataset(self, ids, batch_size: int):
        """Batches ``(raw counts (B, bands, P, P) float32, log M (B,) float32)`` of ``ids``, in the given order."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(np.asarray(ids, dtype=np.int64)).batch(batch_size)
        return ds.map(self.gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
            tf.data.AUTOTUNE)

    def views(self, clusters) -> np.ndarray:
        """All views of ``clusters`` as raw counts, ``(len(clusters) * n_views, bands, P, P)`` float32, cluster-major."""
        v = make_views(self._images[np.asarray(clusters)])
        return v.reshape(-1, *self.image_shape).astype(np.float32)
