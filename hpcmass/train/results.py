"""Fold results, and how they reach the store while folds train in separate processes.

Folds run as independent jobs (SLURM array tasks, or ranks of one mpirun), hours long and
finishing in any order, but the store has one writer at a time (its writer lock, and HDF5's own
file lock). So a fold never holds the store while it trains:

1. the fold's group writes its outcome to ``<workdir>/train/fold_KK/result.h5`` (rank 0, temp file
   renamed into place: complete or absent), next to its checkpoints and ``model.keras``;
2. then whichever process is done takes the store's lock briefly — retrying while another holds
   it — and copies *every* finished fold result not yet in ``/train`` into it, marking those folds
   done (or failed, with the reason). The last fold to finish therefore fills the store; if it
   could not get the lock in time, any later ``hpcmass train`` (which trains nothing when all
   folds have results) fills it.

The merge is done by one process (rank 0, over a one-rank communicator): it writes a few
kilobytes, and ``/train/pred_log_m500c`` is indexed by cluster, not by fold (the unit), so the
per-rank independent-write pattern of the other stages would not fit it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import StoreBusyError
from ..images import VIEW_ORDER
from ..params import Params
from ..store import DONE, Store, utc_now
from .checkpoint import HISTORY_KEYS
from .files import result_path
#: How long to wait for the store while another process holds it [s].
STORE_WAIT_S = 600.0


@dataclass
class FoldResult:
    fold: int
    status: str  # "done", "failed", or "stopped" (on request; resumable, never written)
    message: str
    test_clusters: np.ndarray
    #: (n_test, n_views) predicted log10 M500c of every view of every test cluster (rank 0 only).
    pred: np.ndarray | None
    epoch_chosen: int  # the epoch whose model was kept
    criteria_met: bool  # the paper's criteria held at that epoch
    history: dict[str, list[float]] = field(default_factory=dict)
    ranks: int = 1
    learning_rate: float = 0.0
    epochs_trained: int = 0


def write_result(workdir, result: FoldResult, params_hash: str) -> Path:
    """Write a fold's outcome atomically (temp file, then rename)."""
    path = result_path(workdir, result.fold)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(fold=result.fold, status=result.status, message=result.message, params_hash=params_hash,
                       epoch_chosen=result.epoch_chosen, criteria_met=int(result.criteria_met), ranks=result.ranks,
                       epochs_trained=result.epochs_trained,
                       learning_rate=result.learning_rate, created_utc=utc_now())
        f["test_clusters"] = np.asarray(result.test_clusters, dtype=np.int64)
        if result.pred is not None:
            f["pred_log_m500c"] = np.asarray(result.pred, dtype=np.float32)
        for key in HISTORY_KEYS:
            f[f"history/{key}"] = np.asarray(result.history.get(key, []), dtype=float)
    return path


def read_result(workdir, fold: int, params_hash: str) -> dict | None:
    """A fold's result made with these params (None if absent or made with other params)."""
    path = result_path(workdir, fold)
    if not path.exists():
        return None
    with h5py.File(path, "r") as f:
        if f.attrs["params_hash"] != params_hash:
            return None
        out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        out["test_clusters"] = f["test_clusters"][...]
        out["pred_log_m500c"] = f["pred_log_m500c"][...] if "pred_log_m500c" in f else None
        out["history"] = {k: f[f"history/{k}"][...] for k in HISTORY_KEYS}
    return out


def retry_busy(action, *, wait_s: float = STORE_WAIT_S, log=None, what: str = "the store"):
    """``action()``, retried while the store is busy (another process writing it), up to ``wait_s``."""
    deadline, delay, told = time.monotonic() + wait_s, 0.5, False
    while True:
        try:
            return action()
        except StoreBusyError as e:
            if time.monotonic() + delay > deadline:
                raise
            if log and not told:
                log.info("%s is busy (%s); waiting up to %.0f s", what, e, wait_s)
                told = True
            time.sleep(delay)
            delay = min(2 * delay, 15.0)


@contextlib.contextmanager
def open_train(workdir, params: Params, comm, *, restart_from: str | None = None, wait_s: float = STORE_WAIT_S,
               log=None) -> Iterator:
    """The train stage of the store opened for writing (waiting for the lock), datasets created."""
    stack = contextlib.ExitStack()
    with stack:
        writer = retry_busy(lambda: stack.enter_context(Store.open_stage(
            workdir, params, "train", comm, n_units=params.dataset.n_folds, unit="fold",
            restart_from=restart_from, log=log)), wait_s=wait_s, log=log)
        yield writer


def _datasets(writer, n_clusters: int, n_views: int, max_epochs: int) -> dict:
    ds = {name: writer.require(name) for name in ("epoch_chosen", "epochs_trained", "criteria_met", "ranks",
                                                   "learning_rate")}
    ds["pred_log_m500c"] = writer.require("pred_log_m500c", clusters=n_clusters, views=n_views, fillvalue=np.nan)
    for key in HISTORY_KEYS:
        ds[f"history_{key}"] = writer.require(f"history_{key}", epochs=max_epochs, fillvalue=np.nan)
    return ds


def prepare(workdir, params: Params, comm, *, n_clusters: int, n_views: int, restart_from: str | None, log,
            wait_s: float = STORE_WAIT_S) -> np.ndarray:
    """Open the train stage once before training: check the store's params (fail before hours of
    work), apply ``--restart-from``, create the datasets; return each fold's state."""
    with open_train(workdir, params, comm, restart_from=restart_from, wait_s=wait_s, log=log) as st:
        _datasets(st, n_clusters, n_views, params.train.max_epochs)
        _set_attrs(st, params)
        return st.states()


def _set_attrs(writer, params: Params) -> None:
    writer.set_attrs(view_order=VIEW_ORDER, scaling=params.dataset.scaling, target="log10 M500c [Msun]")


def merge(workdir, params: Params, comm, *, n_clusters: int, n_views: int, log,
          wait_s: float = STORE_WAIT_S) -> dict:
    """Copy every finished fold result not yet in ``/train`` into the store; returns its summary.

    ``comm`` must be a one-rank communicator (see the module docstring).
    """
    params_hash = params.stage_hash("train")
    with open_train(workdir, params, comm, wait_s=wait_s, log=log) as st:
        ds = _datasets(st, n_clusters, n_views, params.train.max_epochs)
        _set_attrs(st, params)
        states = st.states()
        for fold in range(params.dataset.n_folds):
            if states[fold] == DONE:
                continue
            res = read_result(workdir, fold, params_hash)
            if res is None:
                continue
            hist = res["history"]
            for key in HISTORY_KEYS:
                row = np.full(params.train.max_epochs, np.nan, dtype=np.float32)
                row[: hist[key].size] = hist[key]
                ds[f"history_{key}"][fold] = row
            ds["epoch_chosen"][fold] = res["epoch_chosen"]
            ds["criteria_met"][fold] = res["criteria_met"]
            ds["epochs_trained"][fold] = res["epochs_trained"]
            ds["ranks"][fold] = res["ranks"]
            ds["learning_rate"][fold] = res["learning_rate"]
            if res["status"] == "done":
                ds["pred_log_m500c"][res["test_clusters"], :] = res["pred_log_m500c"]
                st.mark_done(fold)
            else:
                st.mark_failed(fold, res["message"])
            if log:
                log.info("store: %s%s", "" if res["status"] == "done" else "FAILED: ", res["message"])
        return st.summary()
