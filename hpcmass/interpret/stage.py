"""The interpret stage: explain every view of every cluster with its own test fold's CNN.

Clusters are dealt to ranks dynamically (one unit = one cluster, its 24 views in one batch);
each rank loads a fold's model the first time it needs it, and takes clusters fold by fold so
it rarely needs many. A cluster's results depend only on the cluster and its fold's model, so
they are the same whatever the number of ranks (occlusion draws come from (run.seed, cluster)).
Beside the trained CNN, the nulls of ``interpret.nulls`` go through the identical procedure, and
each view is occluded region by region (:mod:`.nulls`, :mod:`.occlusion`). When every cluster is
done, rank 0 writes the median Delta N / N profile and its spread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..cpu import configure_tensorflow
from ..dataset.folds import split
from ..errors import StageError
from ..images import VIEWS_PER_AXIS, radius_r500c
from ..mpi import dynamic_tasks, get_logger, on_root, progress, stage_comm
from ..seeding import rng
from ..store import DONE, LAYOUT, Store
from ..store.readers import load_catalog, load_folds, load_interpretation, load_observations
from .dream import MAP_VIEW, explain_cluster, profile_summary, radial_edges, regions
from .nulls import analytic_null
from .occlusion import FILLS, PROFILE_BIN_R500C, mean_profile

_NEEDS = ("catalog", "observe", "dataset", "train")


class _FoldExplainers:
    """What explains a fold's clusters, built once per rank on first use: the trained model and the
    nulls as predict(counts) functions, and the mean profile that fills occluded regions."""

    def __init__(self, workdir, params, images, r500c_kpc, folds, pixel_kpc):
        self.workdir, self.params, self.images, self.r500c_kpc = workdir, params, images, r500c_kpc
        self.folds, self.pixel_kpc = folds, pixel_kpc
        self._cache = {}

    def __call__(self, fold: int):
        """(trained predict, {null name: predict}, mean profile) of fold ``fold``."""
        if fold not in self._cache:
            from ..train.fold import initial_model
            from ..train.model import load_fold_model

            model = load_fold_model(self.workdir, fold)
            nulls = {}
            for name in self.params.interpret.nulls:
                if name == "untrained":
                    untrained = initial_model(self.params, fold, self.images.shape[-1])
                    nulls[name] = lambda counts, m=untrained: m(counts, training=False)
                else:
                    nulls[name] = analytic_null(name)
            self._cache[fold] = (lambda counts: model(counts, training=False), nulls, self._mean_shape(fold))
        return self._cache[fold]

    def _mean_shape(self, fold: int):
        """(bands, bins): mean radial shape in each energy band of the projections of the clusters fold
        ``fold``'s model was trained on."""
        train_c = split(self.folds, fold, self.params.dataset.n_folds)[0]
        p, n_axes = self.images.shape[-1], self.images.shape[1]
        radii = np.stack([radius_r500c(p, self.pixel_kpc, self.r500c_kpc[c]) for c in train_c])
        radii = np.repeat(radii, n_axes, axis=0)  # one per projection
        return np.stack([mean_profile(self.images[train_c, :, b].reshape(-1, p, p), radii)
                         for b in range(self.images.shape[2])])


def _inputs(workdir, params_file):
    with Store.read(workdir) as s:
        for stage in _NEEDS:
            s.require_complete(stage, params_file)
        return load_catalog(s).r500c_kpc, load_folds(s), load_observations(s)


def run(workdir, params, comm=None, *, restart_from: str | None = None, log=None) -> dict:
    """Explain every cluster not yet done; collective over ``comm`` (None: serial).

    Returns the store summary (done, failed, total); raises StageError if any cluster failed.
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    workdir = Path(workdir)
    ip = params.interpret
    r500c, fold, obs = _inputs(workdir, params.file)
    images = obs.network_input  # what the models were trained on
    n, n_axes = images.shape[:2]
    dims = dict(views=VIEWS_PER_AXIS * n_axes, steps=ip.iterations + 1, iterations=ip.iterations,
                bins=ip.radial_bins, pixels=obs.pixels, nulls=len(ip.nulls), explainers=1 + len(ip.nulls),
                regions=len(regions(ip)), fills=len(FILLS))
    configure_tensorflow(comm, working=True, override=params.site.threads, log=log)
    explainers = _FoldExplainers(workdir, params, images, r500c, fold, obs.pixel_kpc)
    with Store.open_stage(workdir, params, "interpret", comm, n_units=n, unit="cluster",
                          restart_from=restart_from, log=log) as st:
        out = {name: st.require(name, **dims) for name in LAYOUT["interpret"]}
        st.on_complete(lambda read: _profile_summary(read, ip))
        st.set_attrs(radial_edges_r500c=radial_edges(ip), map_view=MAP_VIEW, pixel_kpc=obs.pixel_kpc,
                     nulls=",".join(ip.nulls), regions_r500c=json.dumps(regions(ip)),
                     occlusion_fills=",".join(FILLS), occlusion_profile_bin_r500c=PROFILE_BIN_R500C)
        todo = sorted(st.pending(), key=lambda i: (fold[i], i))
        log.info("interpreting %d of %d clusters (%d views each, %d iterations; nulls: %s; occlusion of %s) "
                 "on %d rank(s)", len(todo), n, dims["views"], ip.iterations, ", ".join(ip.nulls),
                 " and ".join(f"{k} {lo:g}-{hi:g} R500c" for k, (lo, hi) in regions(ip).items()), comm.Get_size())
        with progress(comm, len(todo), "interpret") as bar:
            for i in dynamic_tasks(comm, todo):
                try:
                    trained, nulls, mean_shape = explainers(fold[i])
                    result = explain_cluster(trained, images[i], obs.pixel_kpc, r500c[i], ip, nulls, mean_shape,
                                             rng(params.run.seed, "interpret", "occlusion", i))
                except StageError as e:  # e.g. a fold's model file is missing
                    st.mark_failed(i, str(e))
                    continue
                for name, value in result.items():
                    out[name][i] = value
                st.mark_done(i)
                bar.update()
        summary = st.summary()
    if summary["failed"]:
        first = next(iter(summary["failed"].items()))
        raise StageError(f"interpret: {len(summary['failed'])} cluster(s) failed (cluster {first[0]}: {first[1]}); "
                         f"fix the cause and re-run to finish them")
    flagged = on_root(comm, _count_flagged, workdir)
    log.info("interpret done: %d clusters; %d view(s) with an off-centre response", n, flagged)
    return summary


def _profile_summary(read, ip) -> dict:
    """The median profile over every view of every cluster, and its spread (once all are done)."""
    if (read("done") != DONE).any():
        return {}
    med, p16, p84 = profile_summary(read("profile").reshape(-1, ip.iterations, ip.radial_bins))
    return {"profile_median": med, "profile_p16": p16, "profile_p84": p84}


def _count_flagged(workdir) -> int:
    with Store.read(workdir) as s:
        return int(load_interpretation(s).data["off_centre"].sum())
