"""MPI helpers: the only module that imports mpi4py.

- ``world()``: the communicator the command line uses; under ``mpirun``/``srun`` COMM_WORLD, otherwise a
  1-rank COMM_WORLD (singleton MPI init) — one code path for serial and parallel runs;
  ``stage_comm(None)``: COMM_SELF, for a stage called from Python without mpirun.
- ``install_excepthook``: an uncaught exception on one rank aborts the job instead of leaving
  the others hanging in a collective.
- ``get_logger``/``progress``: rank and elapsed time in every line, INFO and bars on rank 0.
- ``dynamic_tasks``: tasks taken most expensive first through an MPI RMA fetch-and-add counter
  held by rank 0, which works too; no coordinator rank sits idle.
- ``wait_all``: a barrier that sleeps: a rank that waits (no fold to train, its share of tasks done,
  rank 0 merging) gives its core back; ``MPI_Barrier`` and ``bcast`` spin a core at 100% in OpenMPI,
  even with ``mpi_yield_when_idle`` (measured: 4.0 CPU-s per 4 s waited, against 0.01 s here).
- ``stop_requested``: set by SIGUSR1 (SLURM's warning before the time limit, forwarded by the job
  script) or SIGTERM; work loops finish the unit in hand and take no new one, so the stage closes
  the store cleanly and a requeued job resumes.

Science code never sees a communicator: stages pass ``comm`` explicitly at call time.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence

import numpy as np

_T0 = time.monotonic()


def world():
    """COMM_WORLD of this process (initialising MPI on first use)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def stage_comm(comm=None):
    """The communicator a stage runs on: ``comm``, or for ``None`` a one-rank one (``MPI.COMM_SELF``),
    so a stage called from Python (a notebook, another workflow engine) runs serially without mpirun."""
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_SELF


def under_launcher() -> bool:
    """True when started by mpirun/srun (several ranks possible), False for a plain process."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS"))


def install_excepthook(comm) -> None:
    """Make an uncaught exception on any rank abort the whole job (after printing it)."""
    if comm.Get_size() == 1:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


#: Exit code of a stage that stopped early on request (time limit): its work is resumable.
EXIT_STOPPED = 75
_STOP = {"signal": None}


def _request_stop(signum, frame):
    _STOP["signal"] = signal.Signals(signum).name


def install_stop_handler() -> None:
    """Turn SIGUSR1/SIGTERM into a request to stop after the unit in hand."""
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, _request_stop)


def stop_requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _STOP["signal"]


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record):
        record.rank = self.rank
        record.elapsed = time.monotonic() - _T0
        # INFO and below from rank 0 only; warnings and errors from every rank.
        return self.rank == 0 or record.levelno >= logging.WARNING


def get_logger(comm=None, name: str = "hpcmass") -> logging.Logger:
    """The package logger, configured once with a rank/elapsed-time prefix."""
    logger = logging.getLogger(name)
    if not getattr(logger, "_hpcmass_configured", False):
        rank = comm.Get_rank() if comm is not None else 0
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s r%(rank)d +%(elapsed)7.1fs] %(levelname)s %(message)s"))
        handler.addFilter(_RankFilter(rank))
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("HPCMASS_LOG_LEVEL", "INFO"))
        logger.propagate = False
        logger._hpcmass_configured = True
    return logger


def progress(comm, total: int, desc: str, initial: int = 0):
    """A tqdm bar drawn on rank 0 only (other ranks get a disabled bar with the same API)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="task", dynamic_ncols=True,
                disable=comm.Get_rank() != 0 or os.environ.get("HPCMASS_PROGRESS", "1") == "0",
                file=sys.stderr)


def wait_all(comm, longest_sleep_s: float = 0.05) -> None:
    """Return once every rank of ``comm`` has called this (a barrier), sleeping while waiting.

    Polls a nonblocking barrier with sleeps growing from 1 ms to ``longest_sleep_s``: a waiting rank
    costs next to no CPU and learns of the last arrival within ``longest_sleep_s``.
    """
    if comm.Get_size() == 1:
        return
    request, sleep = comm.Ibarrier(), 0.001
    while not request.Test():
        time.sleep(sleep)
        sleep = min(2 * sleep, longest_sleep_s)


def on_root(comm, fn, *args):
    """Run ``fn(*args)`` on rank 0 alone and return its result on every rank.

    An HpcmassError it raises is raised on every rank, so no rank is left waiting in the next
    collective. Any other exception (a bug) aborts a multi-rank job at once, after printing its
    traceback: raised, it would first meet rank 0's clean-up, whose collectives (the store's
    flush and close) the waiting ranks never join, and hang the job instead of ending it.
    """
    from .errors import HpcmassError

    out = None
    if comm.Get_rank() == 0:
        try:
            out = fn(*args)
        except HpcmassError as e:
            out = e
        except Exception:
            if comm.Get_size() > 1:
                traceback.print_exc()
                sys.stderr.flush()
                comm.Abort(1)
            raise
    wait_all(comm)  # the other ranks sleep while rank 0 works
    out = comm.bcast(out, root=0)
    if isinstance(out, HpcmassError):
        raise out
    return out


class SharedCounter:
    """An int64 on rank 0, advanced atomically with MPI_Fetch_and_op from any rank."""

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        itemsize = MPI.INT64_T.Get_size()
        size = itemsize if comm.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(size, itemsize, comm=comm)
        if comm.Get_rank() == 0:
            np.frombuffer(self.win.tomemory(), dtype=np.int64)[0] = 0
        comm.Barrier()

    def next(self) -> int:
        """Return the counter's value and add one to it."""
        MPI = self._MPI
        one = np.ones(1, dtype=np.int64)
        got = np.empty(1, dtype=np.int64)
        self.win.Lock(0, MPI.LOCK_SHARED)
        self.win.Fetch_and_op(one, got, 0, 0, MPI.SUM)
        self.win.Unlock(0)
        return int(got[0])

    def free(self) -> None:
        wait_all(self.comm)  # ranks whose share is done sleep until the last task ends
        self.win.Free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


def dynamic_tasks(comm, tasks: Sequence, costs: Sequence[float] | None = None) -> Iterator:
    """Yield this rank's share of ``tasks``, claimed one at a time, most expensive first.

    Collective: every rank must call it with the same tasks and costs, and iterate to the end.
    Which rank runs a task depends on timing, so results must depend only on the task.
    After a stop request (``stop_requested``) no new task is claimed.
    """
    order = list(range(len(tasks)))
    if costs is not None:
        # Stable sort: equal costs keep the given order, so every rank computes the same list.
        order.sort(key=lambda i: -float(costs[i]))
    if comm.Get_size() == 1:
        for i in order:
            if stop_requested():
                return
            yield tasks[i]
        return
    with SharedCounter(comm) as counter:
        while not stop_requested() and (k := counter.next()) < len(order):
            yield tasks[order[k]]
