"""Who trains one fold: a single process, or a Horovod group of ranks (data parallel).

One training code path serves both: :class:`Group` is a no-op for one process, and with Horovod
it wraps the optimizer in ``hvd.DistributedOptimizer`` (gradients averaged over the ranks every
step), broadcasts the initial variables from rank 0, gathers validation predictions and says
which rank writes. Horovod only ever spans the ranks of one fold: folds are trained by separate
groups (SLURM array tasks, or one rank each under plain mpirun) and never exchange gradients.

Learning rate under Horovod: each rank takes ``train.batch_size`` images per step, so a step
sees ``batch_size × ranks`` images and an epoch has ``ranks`` times fewer steps. With
``train.horovod_lr_scaling: linear`` (default) the learning rate is multiplied by the number of
ranks (Goyal et al. 2017, Horovod's recommendation) to keep the progress per epoch; ``none``
keeps the paper's 5e-4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Group:
    rank: int = 0
    size: int = 1
    #: ``horovod.tensorflow.keras`` when the group uses Horovod.
    hvd: Any = None

    @classmethod
    def horovod(cls, comm) -> "Group":
        """Start Horovod on the ranks of an mpi4py communicator (every rank of it must call this)."""
        import horovod.tensorflow.keras as hvd

        hvd.init(comm=comm)
        return cls(hvd.rank(), hvd.size(), hvd)

    @property
    def writes(self) -> bool:
        """Only rank 0 of a group writes checkpoints, models and results."""
        return self.rank == 0

    def learning_rate(self, lr: float, scaling: str) -> float:
        return lr * self.size if self.hvd is not None and scaling == "linear" else lr

    def optimizer(self, optimizer):
        return optimizer if self.hvd is None else self.hvd.DistributedOptimizer(optimizer)

    def broadcast(self, variables) -> None:
        """Give every rank rank 0's values (before the first step, so all ranks start alike)."""
        if self.hvd is not None:
            import horovod.tensorflow as hvd_tf

            hvd_tf.broadcast_variables(variables, root_rank=0)

    def allgather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.hvd is None:
            return [obj]
        import horovod.tensorflow as hvd_tf

        return hvd_tf.allgather_object(obj)

    def gather_rows(self, part: np.ndarray, n: int) -> np.ndarray:
        """Reassemble an array computed as ``rows[rank::size]`` on each rank into its ``n`` rows."""
        parts = self.allgather(part)
        out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
        for r, p in enumerate(parts):
            out[r::self.size] = p
        return out

    def pin_gpu(self) -> str | None:
        """Give this process one GPU of its node (its local rank's), before TensorFlow touches any.

        Without it every rank of a multi-GPU node would use the first GPU. Returns the device, or
        None on a machine without GPUs.
        """
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        if self.hvd is not None:
            local = self.hvd.local_rank()
        else:  # folds round-robin: the launcher's local rank
            local = next((int(os.environ[k]) for k in _LOCAL_RANK if k in os.environ), 0)
        gpu = gpus[local % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
        return gpu.name

    def shutdown(self) -> None:
        if self.hvd is not None:
            self.hvd.shutdown()


#: Environment variables holding a process's rank within its node (OpenMPI, SLURM, MPICH/Intel MPI).
_LOCAL_RANK = ("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID")
