"""Per-epoch checkpoints of one fold: ``<workdir>/train/fold_KK/checkpoints/epoch_EEEE.h5``.

Each holds the model's weights, the optimizer's variables (Adam's step count and moments), the
weights of the epoch the stopping rule would keep so far (``kept``: a later epoch's checkpoint must
still hold them), the epoch, the params hash of the train stage, the per-epoch history and the
random-stream keys.
Randomness is re-derived at the start of every epoch from (run.seed, fold, epoch[, rank]) —
the data order and the dropout generators — so these keys *are* the RNG state at an epoch
boundary, and a resumed fold repeats the uninterrupted one exactly (bit for bit with
``train.deterministic``).

Written by one process (rank 0 of the fold's group) to a temporary name and renamed into
place (``os.replace`` is atomic): a kill at any moment leaves the previous checkpoint intact.
The last two are kept, so the last good one survives a diverged (NaN) epoch, which is never
checkpointed. Checkpoints with another params hash are ignored and cleared.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..store import utc_now

_NAME = re.compile(r"^epoch_(\d{4,})\.h5$")
KEEP = 2
#: Per-epoch records kept in checkpoints, fold results and the store.
HISTORY_KEYS = ("loss", "val_loss", "val_max_abs_delta", "val_median_delta", "val_slope", "val_met", "seconds")


@dataclass
class State:
    """What a checkpoint restores."""

    epoch: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    history: dict[str, list[float]] = field(default_factory=dict)
    #: weights of the epoch the stopping rule keeps so far (empty before the first epoch)
    kept: list[np.ndarray] = field(default_factory=list)


def _existing(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save(directory: Path, state: State, *, params_hash: str, fold: int, rng_keys: dict) -> Path:
    """Write ``epoch_EEEE.h5`` atomically, then drop all but the last :data:`KEEP` checkpoints."""
    final = directory / f"epoch_{state.epoch:04d}.h5"
    with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(epoch=state.epoch, fold=fold, params_hash=params_hash, created_utc=utc_now(),
                       rng_keys=json.dumps(rng_keys, sort_keys=True))
        for group, arrays in (("weights", state.weights), ("optimizer", state.optimizer), ("kept", state.kept)):
            g = f.create_group(group)
            for i, a in enumerate(arrays):
                g.create_dataset(f"{i:04d}", data=a)
        h = f.create_group("history")
        for key in HISTORY_KEYS:
            h.create_dataset(key, data=np.asarray(state.history.get(key, []), dtype=float))
    for _, old in _existing(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".epoch_*.tmp"):  # a writer killed mid-write (one writer per fold)
        stale.unlink(missing_ok=True)
    return final


def latest_epoch(directory: Path) -> int:
    """The epoch of the newest checkpoint file (0 if none), without reading it."""
    found = _existing(directory)
    return found[0][0] if found else 0


def load_latest(directory: Path, *, params_hash: str, fold: int, log=None, at_most: int | None = None) -> State | None:
    """The newest readable checkpoint made with these params (of an epoch ``<= at_most``, if given),
    or None (stale ones are cleared)."""
    for epoch, path in _existing(directory):
        if at_most is not None and epoch > at_most:
            continue
        try:
            with h5py.File(path, "r") as f:
                if f.attrs["params_hash"] != params_hash or int(f.attrs["fold"]) != fold:
                    if log:
                        log.warning("fold %d: checkpoints in %s were made with other params; starting afresh",
                                    fold, directory)
                    clear(directory)
                    return None
                return State(
                    epoch=int(f.attrs["epoch"]),
                    weights=[f["weights"][k][()] for k in sorted(f["weights"])],
                    optimizer=[f["optimizer"][k][()] for k in sorted(f["optimizer"])],
                    history={k: f["history"][k][()].tolist() for k in HISTORY_KEYS},
                    kept=[f["kept"][k][()] for k in sorted(f["kept"])],
                )
        except (OSError, KeyError) as e:
            # Cannot happen through save() (atomic rename); a damaged copy: fall back to the one before.
            if log:
                log.warning("fold %d: unreadable checkpoint %s (%s); trying the previous one", fold, path, e)
    return None


def clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
