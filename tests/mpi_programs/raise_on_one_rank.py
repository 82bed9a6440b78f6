"""An MPI program for the excepthook test: one rank raises while every other rank waits in a
collective, so without ``install_excepthook`` (and ``on_root``'s abort) the job would hang there.

Usage: raise_on_one_rank.py [--no-excepthook] [--on-root]

- default: the last rank raises while the others wait in Barrier, then bcast;
- ``--on-root``: rank 0's work inside :func:`hpcmass.mpi.on_root` raises (a bug, not an
  HpcmassError) while the others sleep in on_root's nonblocking barrier, and rank 0's clean-up
  enters a blocking collective first, as the store's close does (a collective flush);
- ``--no-excepthook`` shows the hang the hook prevents.
"""

import sys
import time

from hpcmass.mpi import install_excepthook, on_root, world

#: Printed by the waiting ranks only if they get past the collective (they must not).
PAST = "rank {rank}: past the collective"


def fail(rank):
    raise RuntimeError(f"rank {rank} fails on purpose while the others wait in a collective")


def main():
    comm = world()
    if "--no-excepthook" not in sys.argv[1:]:
        install_excepthook(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    if "--on-root" in sys.argv[1:]:
        try:
            on_root(comm, fail, rank)
        finally:
            comm.Barrier()  # a collective clean-up the waiting ranks never reach
        print(PAST.format(rank=rank), flush=True)
        return 0
    if rank == size - 1:
        time.sleep(0.5)  # let the other ranks enter the collective first
        fail(rank)
    comm.Barrier()
    comm.bcast(None, root=size - 1)
    print(PAST.format(rank=rank), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
