"""``hpcmass interpret``: explain every view of every cluster with its own test fold's CNN.

Clusters are dealt to ranks dynamically (one unit = one cluster, its 24 views in one batch);
each rank loads a fold's model the first time it needs it, and takes clusters fold by fold so
it rarely needs many. A cluster's results depend only on the cluster and its fold's model, so
they are the same whatever the number of ranks. When every cluster is done, rank 0 writes the
median Delta N / N profile and its spread.
"""

from __future__ import annotations

from ..errors import StageError
from ..mpi import dynamic_tasks, get_logger, progress
from ..store import LAYOUT, Store
from .dream import MAP_VIEW, explain_cluster, profile_summary, radial_edges

HELP = "DeepDream-style input gradients of each test view's mass, radial ΔN/N profiles (MPI over clusters)"
_NEEDS = ("catalog", "observe", "dataset", "train")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``interpret`` params section."""


class _FoldModels:
    """Each fold's trained model, loaded once per rank on first use, as a predict(counts) function."""

    def __init__(self, workdir):
        self.workdir = workdir
        self._cache = {}

    def __call__(self, fold: int):
        if fold not in self._cache:
            from ..train.model import load_fold_model

            model = load_fold_model(self.workdir, fold)
            self._cache[fold] = lambda counts: model(counts, training=False)
        return self._cache[fold]


def run(args, params, comm) -> int:
    log = get_logger(comm)
    ip = params.interpret
    with Store.read(args.workdir) as s:
        for stage in _NEEDS:
            s.require_complete(stage, args.params)
        r500c = s.file["catalog/r500c_kpc"][...]
        fold = s.file["dataset/fold"][...].astype(int)
        n, n_axes, pixels, _ = s.file["observe/images"].shape
        pixel_kpc = float(s.file["observe"].attrs["pixel_kpc"])
    from ..dataset.views import VIEWS_PER_AXIS

    dims = dict(views=VIEWS_PER_AXIS * n_axes, steps=ip.iterations + 1, iterations=ip.iterations,
                bins=ip.radial_bins, pixels=pixels)
    models = _FoldModels(args.workdir)
    with Store.open_stage(args.workdir, params, "interpret", comm, n_units=n, unit="cluster",
                          restart_from=args.restart_from, log=log) as st:
        out = {name: st.require(name, **dims) for name in LAYOUT["interpret"]}
        st.set_attrs(radial_edges_r500c=radial_edges(ip), map_view=MAP_VIEW, pixel_kpc=pixel_kpc)
        images = st.store.file["observe/images"]
        todo = sorted(st.pending(), key=lambda i: (fold[i], i))
        log.info("interpreting %d of %d clusters (%d views each, %d iterations) on %d rank(s)",
                 len(todo), n, dims["views"], ip.iterations, comm.Get_size())
        with progress(comm, len(todo), "interpret") as bar:
            for i in dynamic_tasks(comm, todo):
                try:
                    result = explain_cluster(models(fold[i]), images[i], pixel_kpc, r500c[i], ip)
                except StageError as e:  # e.g. a fold's model file is missing
                    st.mark_failed(i, str(e))
                    continue
                for name, value in result.items():
                    out[name][i] = value
                st.mark_done(i)
                bar.update()
        st.store.file.flush()
        comm.Barrier()
        summary = st.summary()
        if summary["done"] == n and comm.Get_rank() == 0:
            med, p16, p84 = profile_summary(out["profile"][...].reshape(-1, ip.iterations, ip.radial_bins))
            out["profile_median"][...], out["profile_p16"][...], out["profile_p84"][...] = med, p16, p84
    if summary["failed"]:
        first = next(iter(summary["failed"].items()))
        raise StageError(f"interpret: {len(summary['failed'])} cluster(s) failed (cluster {first[0]}: {first[1]}); "
                         f"fix the cause and re-run to finish them")
    if comm.Get_rank() == 0:
        flagged = _count_flagged(args.workdir)
        log.info("interpret done: %d clusters; %d view(s) with an off-centre response", n, flagged)
    return 0


def _count_flagged(workdir) -> int:
    with Store.read(workdir) as s:
        return int(s.file["interpret/off_centre"][...].sum())
