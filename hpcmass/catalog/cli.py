"""``hpcmass catalog``: build the cluster sample and its table in the store."""

from __future__ import annotations

from ..mpi import get_logger
from .stage import run_catalog

HELP = ("build the cluster sample: synthetic clusters written as TNG300 cutouts (source: synthetic) or the "
        "TNG300 data staged by fetch-tng (source: tng300), and the catalogue table in the store")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the params' catalog section."""


def run(args, params, comm) -> int:
    run_catalog(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    return 0
