"""``hpcmass dataset``: the dataset stage (:mod:`hpcmass.dataset.stage`) from the command line."""

from __future__ import annotations

from ..mpi import get_logger
from . import stage

HELP = "assign clusters to cross-validation folds (sorted by mass, dealt cyclically); views are made in training"


def add_arguments(parser) -> None:
    """No options of its own: ``dataset.n_folds`` and ``dataset.scaling`` come from the params."""


def run(args, params, comm) -> int:
    stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    return 0
