"""``hpcmass report``: statistics, the L_X baseline, the paper's figures, ``<workdir>/report/index.html``.

The report is one unit of work done by rank 0; other ranks (when launched in an MPI job) only
take part in opening and closing the store. The L_X measurements go into the store's ``report``
group, whose done flag marks the report finished.
"""

from __future__ import annotations

from ..errors import HpcmassError, StageError
from ..mpi import get_logger
from ..store import Store, stage_dir

HELP = "statistics, core-excised L_X baseline, figures 1 and 3-6, HTML report and clusters.csv (rank 0)"
_NEEDS = ("catalog", "observe", "dataset", "train", "interpret")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``report`` params section."""


def run(args, params, comm) -> int:
    log = get_logger(comm)
    rank = comm.Get_rank()
    with Store.read(args.workdir) as s:
        for stage in _NEEDS:
            s.require_complete(stage, args.params)
        n, n_axes = s.file["observe/images"].shape[:2]
    out = stage_dir(args.workdir, "report")
    with Store.open_stage(args.workdir, params, "report", comm, n_units=1, unit="report",
                          restart_from=args.restart_from, log=log) as st:
        dims = dict(clusters=n, axes=n_axes, apertures=1 + len(params.report.lx_aperture_errors))
        ds = {name: st.require(name, **dims) for name in ("lx_net_counts", "lx_covered", "lx_erg_s",
                                                           "lx_pred_log_m500c")}
        error = None
        if not st.pending():
            log.info("the report is already done (%s); use --restart-from report to make it again", out / "index.html")
        elif rank == 0:
            try:
                from .build import build_report

                prov = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in st.group.attrs.items()}
                lx, summary = build_report(st.store.file, params, out, prov,
                                           stage_dir(args.workdir, "observe") / "approx")
                ds["lx_net_counts"][...] = lx.net_counts
                ds["lx_covered"][...] = lx.covered
                ds["lx_erg_s"][...] = lx.lx
                ds["lx_pred_log_m500c"][...] = lx.pred
                st.mark_done(0)
                cnn = summary["cnn"]["all"]
                log.info("report: %s — CNN sigma %.3f dex (%.1f%%), mu %+.3f; best fold %d sigma %.3f",
                         out / "index.html", cnn["sigma"], cnn["percent"], cnn["mu"], summary["cnn"]["best_fold"],
                         summary["cnn"]["best"]["sigma"])
            except HpcmassError as e:
                error = str(e)
        # Rank 0 worked while the others waited here; a failure is raised on every rank alike.
        error = comm.bcast(error, root=0)
    if error:
        raise StageError(error)
    return 0
