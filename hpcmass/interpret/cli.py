"""``hpcmass interpret``: the interpret stage (:mod:`hpcmass.interpret.stage`) from the command line."""

from __future__ import annotations

from ..mpi import get_logger
from . import stage

HELP = "DeepDream-style input gradients of each test view's mass, radial ΔN/N profiles (MPI over clusters)"


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``interpret`` params section."""


def run(args, params, comm) -> int:
    stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    return 0
