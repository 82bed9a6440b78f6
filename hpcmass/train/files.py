"""Where a fold's files live: ``<workdir>/train/fold_KK/`` (no TensorFlow import here)."""

from __future__ import annotations

from pathlib import Path

from ..store import stage_dir


def fold_dir(workdir, fold: int) -> Path:
    return stage_dir(workdir, "train") / f"fold_{fold:02d}"


def model_path(workdir, fold: int) -> Path:
    """The model the fold kept (``.keras``)."""
    return fold_dir(workdir, fold) / "model.keras"


def result_path(workdir, fold: int) -> Path:
    """The fold's outcome: predictions, chosen epoch, history (see :mod:`hpcmass.train.results`)."""
    return fold_dir(workdir, fold) / "result.h5"


def checkpoint_dir(workdir, fold: int) -> Path:
    return fold_dir(workdir, fold) / "checkpoints"
