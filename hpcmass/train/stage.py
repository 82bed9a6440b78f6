"""The train stage: one CNN per cross-validation fold; every view of every cluster predicted.

Which folds: ``fold=K`` (``--fold K``); else, in a SLURM array task, ``$SLURM_ARRAY_TASK_ID``; else all of them.
Folds already in the store, or with a finished result file, are skipped (resume); a fold that
was interrupted resumes from its last checkpoint.

How ranks share the work:
- without ``--horovod`` every rank trains whole folds on its own, round-robin (fold i on rank
  i mod size); folds never exchange anything;
- with ``horovod=True`` (``--horovod``, or ``train.horovod: true``) all ranks train each fold together (data
  parallel: Horovod averages the gradients of every step); see :mod:`hpcmass.train.distributed`
  for batch size and learning rate;
- with ``train.stack_folds`` each rank trains its folds side by side as one model (:mod:`hpcmass.train.stack`).

Each rank sizes TensorFlow's thread pools to the cores it owns (:mod:`hpcmass.cpu`) before its
first TensorFlow operation; a rank whose folds are done sleeps until the others finish.

On SIGUSR1/SIGTERM (SLURM's time-limit warning) the fold in hand stops after its current epoch's
checkpoint and the command exits 75, so the requeued job resumes where it stopped.

Results reach the store as described in :mod:`hpcmass.train.results`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..cpu import configure_tensorflow
from ..errors import ParamsError, StageError
from ..images import VIEWS_PER_AXIS, bands_label
from ..mpi import get_logger, on_root, stage_comm, stop_requested, wait_all
from ..params import STAGES
from ..store import DONE, Store, stage_dir
from ..store.readers import load_catalog, load_folds, load_observations
from . import results
from .distributed import Group
from .files import fold_dir


def requested_folds(fold: int | None, n_folds: int, environ=os.environ) -> list[int]:
    """The folds this invocation is asked for."""
    source = "--fold"
    if fold is None and environ.get("SLURM_ARRAY_TASK_ID"):
        source, text = "SLURM_ARRAY_TASK_ID", environ["SLURM_ARRAY_TASK_ID"]
        try:
            fold = int(text)
        except ValueError:
            raise ParamsError(f"SLURM_ARRAY_TASK_ID={text!r}: expected a fold number") from None
    if fold is None:
        return list(range(n_folds))
    if not 0 <= fold < n_folds:
        raise ParamsError(f"{source} {fold}: expected a fold 0..{n_folds - 1} (dataset.n_folds={n_folds})")
    return [fold]


def read_inputs(workdir, params_file) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, log_m500c, folds) from the store; errors name the command that makes what is missing."""
    with Store.read(workdir) as s:
        for stage in ("catalog", "observe", "dataset"):
            s.require_complete(stage, params_file)
        images, log_m500c, folds = load_observations(s).network_input, load_catalog(s).log_m500c, load_folds(s)
    if not images.shape[0] == log_m500c.size == folds.size:
        raise StageError(f"{workdir}: the store holds {images.shape[0]} images, {log_m500c.size} masses and "
                         f"{folds.size} fold labels; re-run `hpcmass dataset`")
    return images, log_m500c, folds


def run(workdir, params, comm=None, *, restart_from: str | None = None, log=None, fold: int | None = None,
        horovod: bool = False) -> dict:
    """Train the requested folds (``fold``, else ``$SLURM_ARRAY_TASK_ID``, else all); collective over
    ``comm`` (None: serial). ``horovod=True`` trains each fold over all ranks of ``comm``.

    Returns the train stage's store summary (folds done, failed, total); raises StageError if one of
    the requested folds failed.
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    workdir = Path(workdir)
    rank, size = comm.Get_rank(), comm.Get_size()
    if horovod:
        params = params.model_copy(update={"train": params.train.model_copy(update={"horovod": True})})
    horovod = params.train.horovod
    n_folds = params.dataset.n_folds
    if restart_from in STAGES[:STAGES.index("train")]:
        raise ParamsError(f"--restart-from {restart_from} would discard the train stage's inputs; run "
                          f"`hpcmass {restart_from} --restart-from {restart_from}` first")
    wanted = requested_folds(fold, n_folds)
    images, log_m500c, folds = read_inputs(workdir, params.file)
    n_clusters, pixels = images.shape[0], images.shape[-1]
    from .model import MIN_PIXELS, expected_parameters  # TensorFlow: imported only when training

    if pixels < MIN_PIXELS:
        raise ParamsError(f"observe.image_pixels = {pixels}: the paper's CNN needs at least {MIN_PIXELS} pixels")
    bands = params.observe.bands
    if images.shape[2] != len(bands):
        raise StageError(f"{workdir}: /observe/images hold {images.shape[2]} energy band(s), observe.bands has "
                         f"{len(bands)}; re-run `hpcmass observe --restart-from observe`")
    if folds.max() >= n_folds:
        raise StageError(f"{workdir}: /dataset/fold has {folds.max() + 1} folds, params say {n_folds}; "
                         f"re-run `hpcmass dataset`")
    n_views = VIEWS_PER_AXIS * images.shape[1]
    params_hash = params.stage_hash("train")

    # The store is written by one process at a time (see results); ``solo`` is rank 0's own communicator.
    solo = comm.Split(rank, 0)
    restart = restart_from == "train"

    def prepare():
        states = results.prepare(workdir, params, solo, n_clusters=n_clusters, n_views=n_views,
                                 restart_from=restart_from, log=log)
        if restart:  # the checkpoints and fold results of the discarded run go too
            for k in range(n_folds):
                shutil.rmtree(fold_dir(workdir, k), ignore_errors=True)
        return states

    states = on_root(comm, prepare)
    todo = [k for k in wanted if states[k] != DONE and not _finished(workdir, k, params_hash)]
    skipped = len(wanted) - len(todo)
    log.info("train: %d fold(s) requested, %d to train%s; %d cluster(s) of %d×%d px in %d band(s) (%s; %d "
             "parameters), %d views each, %d rank(s)%s", len(wanted), len(todo),
             f" ({skipped} already done)" if skipped else "", n_clusters, pixels, pixels, len(bands),
             bands_label(bands), expected_parameters(len(bands)), n_views, size, " with Horovod" if horovod else "")

    if horovod:
        group, mine = Group.horovod(comm), todo
    else:
        group, mine = Group(), todo[rank::size]
        if size > 1 and len(todo) < size:
            log.warning("%d rank(s) for %d fold(s): %d rank(s) idle (use --horovod to train a fold on several)",
                        size, len(todo), size - len(todo))
    configure_tensorflow(comm, working=bool(mine), override=params.site.threads, log=log)
    device = group.pin_gpu() if mine else None
    if device:
        log.info("training on %s", device)
    for res in _train(mine, images, log_m500c, folds, params, workdir, group, log):
        log.info(res.message)
        if res.status == "stopped":  # SLURM's time-limit warning: resumable from the checkpoint
            break
        if group.writes:
            results.write_result(workdir, res, params_hash)
    group.shutdown()

    wait_all(comm)  # ranks with fewer (or no) folds sleep until the last fold ends
    summary = on_root(comm, lambda: results.merge(workdir, params, solo, n_clusters=n_clusters,
                                                    n_views=n_views, log=log))
    failed = {k: why for k, why in summary["failed"].items() if k in wanted}
    if failed:
        raise StageError("; ".join(failed.values()))
    log.info("train: %d/%d folds in the store; models in %s", summary["done"], summary["total"],
             stage_dir(workdir, "train"))
    return summary


def _train(mine, images, log_m500c, folds, params, workdir, group, log):
    """This rank's folds' results as they finish: one after another, or side by side (train.stack_folds)."""
    from .fold import train_fold  # TensorFlow: imported only when training
    from .stack import train_stack

    if params.train.stack_folds:
        if mine:
            yield from train_stack(mine, images, log_m500c, folds, params, workdir, log, stop=stop_requested)
        return
    for i, k in enumerate(mine):
        log.info("fold %d (%d/%d on this %s)", k, i + 1, len(mine), "group" if group.hvd else "rank")
        yield train_fold(k, images, log_m500c, folds, params, workdir, group, log, stop=stop_requested)


def _finished(workdir, fold: int, params_hash: str) -> bool:
    res = results.read_result(workdir, fold, params_hash)
    return res is not None and res["status"] == "done"
