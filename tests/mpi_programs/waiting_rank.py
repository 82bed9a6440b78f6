"""Rank 0 works (sleeps) for SECONDS while the others wait in ``wait_all``, or in ``on_root`` for it;
each rank prints the CPU time it spent and the wall time it waited, as JSON.

    mpirun -n 2 python waiting_rank.py {wait_all,on_root} SECONDS
"""

import json
import sys
import time

from hpcmass.mpi import on_root, wait_all, world

comm = world()
how, seconds = sys.argv[1], float(sys.argv[2])
cpu0, wall0 = time.process_time(), time.monotonic()
if how == "on_root":
    on_root(comm, time.sleep, seconds)
else:
    if comm.Get_rank() == 0:
        time.sleep(seconds)
    wait_all(comm)
print(json.dumps({"rank": comm.Get_rank(), "cpu_s": time.process_time() - cpu0,
                  "wall_s": time.monotonic() - wall0}), flush=True)
