"""``hpcmass observe``: the observe stage (:mod:`hpcmass.observe.stage`) from the command line."""

from __future__ import annotations

from ..mpi import get_logger
from . import stage

HELP = "mock Chandra ACIS-I observations of every cluster with pyXSIM + SOXS, binned to images (MPI)"


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the params' observe section."""


def run(args, params, comm) -> int:
    stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    return 0
