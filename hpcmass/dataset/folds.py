"""Cross-validation folds, as in the paper: clusters ordered by true mass, dealt cyclically to folds.

Every fold then has about the same mass function. Fold k's model tests on fold k, validates (the
stopping rule) on fold k+1 mod n and trains on the other n-2 folds. Folds hold whole clusters, so
all views of a cluster are always in one set.
"""

from __future__ import annotations

import numpy as np

from ..errors import StageError


def min_clusters(n_folds: int) -> int:
    """Fewest clusters that give every fold (test and validation set) at least one cluster."""
    return n_folds


def assign_folds(log_m500c, n_folds: int) -> np.ndarray:
    """Fold of each cluster: the i-th lightest cluster goes to fold i mod n_folds (ties: catalogue order)."""
    log_m500c = np.asarray(log_m500c, dtype=float)
    if log_m500c.ndim != 1:
        raise ValueError(f"log_m500c must be 1-D, got shape {log_m500c.shape}")
    if n_folds < 3:
        raise ValueError(f"n_folds must be >= 3 (test, validation and training folds), got {n_folds}")
    bad = np.flatnonzero(~np.isfinite(log_m500c))
    if bad.size:
        raise StageError(f"log_m500c is not finite for cluster(s) {bad[:10].tolist()}; re-run `hpcmass catalog`")
    if log_m500c.size < min_clusters(n_folds):
        raise StageError(f"{log_m500c.size} clusters are too few for {n_folds} folds: at least "
                         f"{min_clusters(n_folds)} are needed (set dataset.n_folds <= {log_m500c.size}, "
                         f"or use more clusters)")
    folds = np.empty(log_m500c.size, dtype=np.int16)
    folds[np.argsort(log_m500c, kind="stable")] = np.arange(log_m500c.size) % n_folds
    return folds


def split(folds, k: int, n_folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster indices (train, validation, test) of fold k: test k, validate k+1 mod n, train the rest."""
    folds = np.asarray(folds)
    if not 0 <= k < n_folds:
        raise ValueError(f"fold {k} out of range 0..{n_folds - 1}")
    val = (k + 1) % n_folds
    test_idx = np.flatnonzero(folds == k)
    val_idx = np.flatnonzero(folds == val)
    train_idx = np.flatnonzero((folds != k) & (folds != val))
    return train_idx, val_idx, test_idx
