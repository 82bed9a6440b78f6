"""The CPU threads each rank gives TensorFlow.

A rank owns the cores of its affinity mask: OpenMPI binds each of ≤2 ranks to one core by default
(``mpirun --bind-to``), srun binds to the task's CPUs, a SLURM cgroup limits the mask to the
allocation. TensorFlow instead sizes its pools for every core it can see, so ranks that share a
mask (``--bind-to none``) would each start a full-node pool and oversubscribe the node. Here the
cores of a mask are divided among the node's *working* ranks that share it: a rank with no fold
to train takes no share, so under ``--bind-to none`` the working ranks use its cores.
``site.threads`` overrides the count.

TensorFlow's oneDNN CPU kernels, which halve the training step on an AVX2 machine, are turned on in
:mod:`hpcmass` itself (they must be set before TensorFlow is imported).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def threads_for(mask: frozenset[int], working_masks: Sequence[frozenset[int]]) -> int:
    """Threads for a rank with affinity ``mask`` among the node's working ranks' masks (its own included):
    its cores divided by the number of working ranks whose masks overlap it, at least one."""
    sharing = sum(1 for other in working_masks if other & mask)
    return max(1, len(mask) // max(1, sharing))


def configure_tensorflow(comm, working: bool, override: int | None = None, log=None) -> int:
    """Size this rank's TensorFlow thread pools (collective over ``comm``); returns the count.

    Call before the rank's first TensorFlow operation: once TensorFlow runs, its pools are fixed
    (then this warns and leaves them). ``working``: whether this rank will run TensorFlow at all.
    """
    from mpi4py import MPI

    mask = frozenset(os.sched_getaffinity(0))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        on_node = node.allgather((mask, working))
    finally:
        node.Free()
    threads = override or threads_for(mask, [m for m, w in on_node if w])
    if working:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran in this process (a notebook): its pools stay
            threads = tf.config.threading.get_intra_op_parallelism_threads() or len(mask)
            if log:
                log.warning("TensorFlow was already running in this process: its thread pools stay as they are")
    counts = comm.gather(threads if working else 0, root=0)
    if log and comm.Get_rank() == 0:
        working_counts = [c for c in counts if c]
        log.info("TensorFlow threads per working rank: %s (rank 0 owns %d core(s)%s); oneDNN kernels %s",
                 ", ".join(map(str, working_counts)) or "none", len(mask),
                 ", site.threads" if override else "", _onednn_state())
    return threads


def _onednn_state() -> str:
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return {"1": "on", "0": "off"}.get(value, f"TensorFlow's default (TF_ENABLE_ONEDNN_OPTS={value!r})")
