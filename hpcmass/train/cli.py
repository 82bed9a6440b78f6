"""``hpcmass train``: the train stage (:mod:`hpcmass.train.stage`) from the command line."""

from __future__ import annotations

from ..mpi import get_logger
from . import stage

HELP = "train the CNN, one model per cross-validation fold (--fold K or SLURM array index; --horovod within a fold)"


def add_arguments(parser) -> None:
    parser.add_argument("--fold", type=int, metavar="K",
                        help="train fold K only (default: $SLURM_ARRAY_TASK_ID in an array job, else every fold)")
    parser.add_argument("--horovod", action="store_true",
                        help="all ranks train each fold together with Horovod (data parallel), i.e. "
                             "--set train.horovod=true; without it, ranks train separate folds round-robin")


def run(args, params, comm) -> int:
    stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm), fold=args.fold,
              horovod=args.horovod)
    return 0
