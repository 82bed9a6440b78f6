"""Each rank sizes TensorFlow's thread pools with configure_tensorflow and prints what it got, as JSON.

    mpirun -n 2 [--bind-to none] python tf_threads.py WORKING_RANKS [OVERRIDE]

WORKING_RANKS: comma-separated ranks that will run TensorFlow (the others are idle, as a rank
with no fold to train is).
"""

import json
import os
import sys

from hpcmass.cpu import configure_tensorflow
from hpcmass.mpi import world

comm = world()
working = comm.Get_rank() in {int(r) for r in sys.argv[1].split(",")}
override = int(sys.argv[2]) if len(sys.argv) > 2 else None
threads = configure_tensorflow(comm, working=working, override=override)
out = {"rank": comm.Get_rank(), "threads": threads, "mask": sorted(os.sched_getaffinity(0))}
if working:
    import tensorflow as tf

    out["intra"] = tf.config.threading.get_intra_op_parallelism_threads()
    out["inter"] = tf.config.threading.get_inter_op_parallelism_threads()
    tf.constant(1.0) + 1.0  # TensorFlow starts with these pools
print(json.dumps(out), flush=True)
