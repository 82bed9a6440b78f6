"""``hpcmass catalog``: the catalog stage (:mod:`hpcmass.catalog.stage`) from the command line."""

from __future__ import annotations

from ..mpi import get_logger
from . import stage

HELP = ("build the cluster sample: synthetic clusters written as TNG300 cutouts (source: synthetic) or the "
        "TNG300 data staged by fetch-tng (source: tng300), and the catalogue table in the store")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the params' catalog section."""


def run(args, params, comm) -> int:
    stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    return 0
