"""One writer at a time: rank 0 holds ``store.h5.lock`` (host, pid, SLURM job) for the run.

A lock whose process is gone (same host) or whose SLURM job was requeued is stale and replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreBusyError, StoreError
from .provenance import utc_now


@dataclass(frozen=True)
class _LockInfo:
    host: str
    pid: int
    stage: str
    since: str
    slurm_job: str | None

    @classmethod
    def mine(cls, stage: str) -> "_LockInfo":
        return cls(socket.gethostname(), os.getpid(), stage, utc_now(), os.environ.get("SLURM_JOB_ID"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed rank whose parent (mpirun) is gone can linger as a zombie until reaped
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


#: How long a lock holder on this host may take to die before it counts as alive: mpirun returns
#: before every killed rank is reaped, so a job re-run at once would otherwise be refused.
DYING_GRACE_S = 3.0


def _stale_reason(held: _LockInfo) -> str | None:
    if held.slurm_job and held.slurm_job == os.environ.get("SLURM_JOB_ID") and held.pid != os.getpid():
        return f"SLURM job {held.slurm_job} was requeued"
    if held.host != socket.gethostname():
        return None
    deadline = time.monotonic() + DYING_GRACE_S
    while _pid_alive(held.pid):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return f"process {held.pid} on {held.host} is gone"


@contextlib.contextmanager
def writer_lock(path: Path, stage: str, log=None) -> Iterator[None]:
    """Hold ``<store>.lock`` for the duration; refuse if another live writer holds it."""
    lock = path.with_name(path.name + ".lock")
    mine = _LockInfo.mine(stage)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = _LockInfo(**json.loads(lock.read_text()))
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError, TypeError):
                # Busy: also what a lock just created by another process (not yet written) looks like.
                raise StoreBusyError(f"{lock}: unreadable lock file; if no hpcmass job uses {path}, delete it") from None
            reason = _stale_reason(held)
            if reason is None:
                raise StoreBusyError(
                    f"{path} is being written by pid {held.pid} on {held.host} (stage {held.stage}, since "
                    f"{held.since}{', SLURM job ' + held.slurm_job if held.slurm_job else ''}); wait for it to end, "
                    f"or if it is dead delete {lock}"
                )
            if log:
                log.warning("removing stale lock %s (%s)", lock, reason)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(mine.__dict__, fh)
        break
    else:
        raise StoreError(f"{lock}: could not take the writer lock")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(lock.read_text()).get("pid") == mine.pid:
                lock.unlink()


@contextlib.contextmanager
def collective_lock(path: Path, stage: str, comm, log) -> Iterator[None]:
    """Rank 0 holds the writer lock while every rank works; a refusal is raised on all ranks."""
    rank = comm.Get_rank()
    error = None
    lock_cm = writer_lock(path, stage, log) if rank == 0 else contextlib.nullcontext()
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock_cm.__enter__()
        except StoreError as e:
            error = e  # the exception itself, so that every rank raises the same type (busy: retryable)
    error = comm.bcast(error, root=0)
    if error:
        raise error
    try:
        yield
    finally:
        if rank == 0:
            lock_cm.__exit__(None, None, None)
