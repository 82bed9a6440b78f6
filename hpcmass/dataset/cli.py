"""``hpcmass dataset``: assign every cluster to a cross-validation fold (seconds).

Writes ``/dataset/fold``; the 24 views of each cluster are not stored (8× the images) but made
on the fly from ``/observe/images`` by the training pipeline, in the order of
:mod:`hpcmass.dataset.views`.
"""

from __future__ import annotations

import numpy as np

from ..errors import StageError
from ..mpi import get_logger
from ..store import Store
from .folds import assign_folds
from .views import VIEW_ORDER, VIEWS_PER_AXIS

HELP = "assign clusters to cross-validation folds (sorted by mass, dealt cyclically); views are made in training"


def add_arguments(parser) -> None:
    """No options of its own: ``dataset.n_folds`` and ``dataset.scaling`` come from the params."""


def run(args, params, comm) -> int:
    log = get_logger(comm)
    n_folds = params.dataset.n_folds
    with Store.read(args.workdir) as s:
        s.require_complete("catalog", args.params)
        s.require_complete("observe", args.params)
        log_m500c = s.file["catalog/log_m500c"][...]
        n_images, n_axes = s.file["observe/images"].shape[:2]
    if n_images != log_m500c.size:
        raise StageError(f"{args.workdir}: {log_m500c.size} clusters in the catalog but {n_images} in /observe/images")
    folds = assign_folds(log_m500c, n_folds)
    with Store.open_stage(args.workdir, params, "dataset", comm, n_units=folds.size, unit="cluster",
                          restart_from=args.restart_from, log=log) as st:
        ds = st.require("fold")
        st.set_attrs(n_folds=n_folds, n_views=VIEWS_PER_AXIS * n_axes, view_order=VIEW_ORDER,
                     scaling=params.dataset.scaling)
        if comm.Get_rank() == 0:
            ds[...] = folds
            for i in st.pending():
                st.mark_done(i)
    for k in range(n_folds):
        m = log_m500c[folds == k]
        log.info("fold %d: %d clusters, log M500c %.2f-%.2f (median %.2f)", k, m.size, m.min(), m.max(), np.median(m))
    log.info("dataset: %d clusters in %d folds, %d views each (made on the fly in training)",
             folds.size, n_folds, VIEWS_PER_AXIS * n_axes)
    return 0
