"""The dataset stage: assign every cluster to a cross-validation fold (seconds).

Writes ``/dataset/fold``; the 24 views of each cluster are not stored (8× the images) but made
on the fly from ``/observe/images`` by the training pipeline, in the order of :mod:`hpcmass.images`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StageError
from ..images import VIEW_ORDER, VIEWS_PER_AXIS
from ..mpi import get_logger, stage_comm
from ..store import Store
from ..store.readers import image_shape, load_catalog
from .folds import assign_folds


def run(workdir, params, comm=None, *, restart_from: str | None = None, log=None) -> dict:
    """Deal the clusters, sorted by true mass, cyclically into ``dataset.n_folds`` folds (None: serial).

    Returns the store summary (done, failed, total).
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    workdir = Path(workdir)
    n_folds = params.dataset.n_folds
    with Store.read(workdir) as s:
        s.require_complete("catalog", params.file)
        s.require_complete("observe", params.file)
        log_m500c = load_catalog(s).log_m500c
        n_images, n_axes = image_shape(s)[:2]
    if n_images != log_m500c.size:
        raise StageError(f"{workdir}: {log_m500c.size} clusters in the catalog but {n_images} in /observe/images")
    folds = assign_folds(log_m500c, n_folds)
    with Store.open_stage(workdir, params, "dataset", comm, n_units=folds.size, unit="cluster",
                          restart_from=restart_from, log=log) as st:
        ds = st.require("fold")
        st.set_attrs(n_folds=n_folds, n_views=VIEWS_PER_AXIS * n_axes, view_order=VIEW_ORDER,
                     scaling=params.dataset.scaling)
        if comm.Get_rank() == 0:
            ds[...] = folds
            for i in st.pending():
                st.mark_done(i)
        summary = st.summary()
    for k in range(n_folds):
        m = log_m500c[folds == k]
        log.info("fold %d: %d clusters, log M500c %.2f-%.2f (median %.2f)", k, m.size, m.min(), m.max(), np.median(m))
    log.info("dataset: %d clusters in %d folds, %d views each (made on the fly in training)",
             folds.size, n_folds, VIEWS_PER_AXIS * n_axes)
    return summary
