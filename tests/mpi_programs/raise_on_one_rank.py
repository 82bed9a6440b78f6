"""An MPI program for the excepthook test: the last rank raises while every other rank waits in a
collective (Barrier, then bcast), so without ``install_excepthook`` the job would hang there.

Usage: raise_on_one_rank.py [--no-excepthook]   (the flag shows the hang the hook prevents)
"""

import sys
import time

from hpcmass.mpi import install_excepthook, world

#: Printed by the waiting ranks only if they get past the collective (they must not).
PAST = "rank {rank}: past the collective"


def main():
    comm = world()
    if "--no-excepthook" not in sys.argv[1:]:
        install_excepthook(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == size - 1:
        time.sleep(0.5)  # let the other ranks enter the collective first
        raise RuntimeError(f"rank {rank} fails on purpose while the others wait in a collective")
    comm.Barrier()
    comm.bcast(None, root=size - 1)
    print(PAST.format(rank=rank), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
