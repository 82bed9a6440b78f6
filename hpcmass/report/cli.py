"""``hpcmass report``: statistics, the L_X baseline, the paper's figures, ``<workdir>/report/index.html``.

The report is one unit of work done by rank 0; other ranks (when launched in an MPI job) only
take part in opening and closing the store. The L_X measurements go into the store's ``report``
group, whose done flag marks the report finished.
"""

from __future__ import annotations

import json

from ..errors import HpcmassError, StageError
from ..mpi import get_logger
from ..store import Store, stage_dir

HELP = "statistics, core-excised L_X baseline, figures 1 and 3-6, HTML report and clusters.csv (rank 0)"
_NEEDS = ("catalog", "observe", "dataset", "train", "interpret")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``report`` params section."""


def summary_lines(summary: dict, html) -> list[str]:
    """The report's path and three lines: CNN scatter and bias, and the L_X baseline, beside the paper's."""
    cnn, paper = summary["cnn"], summary["paper"]
    lx = summary["lx_image"]
    errors = [k for k in lx if k != "0"]
    lx_text = ", ".join(f"{lx[k]['all']['percent']:.1f}% ({float(k):.0%} aperture)" for k in errors)
    paper_lx = ", ".join(f"{paper['lx_percent'][k]}%" for k in errors if k in paper["lx_percent"])
    return [
        f"report: {html}",
        f"  CNN  all folds  sigma {cnn['all']['sigma']:.3f} dex ({cnn['all']['percent']:.1f}%), "
        f"mu {cnn['all']['mu']:+.3f}   [paper: {paper['sigma']:.3f}, {paper['mu']:+.3f}]",
        f"  CNN  best fold  sigma {cnn['best']['sigma']:.3f} dex (fold {cnn['best_fold']})   "
        f"[paper: {paper['best_sigma']:.3f}]",
        f"  L_X  core-excised mass scatter {lx_text}   [paper: {paper_lx}]",
    ]


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
            except HpcmassError as e:
                error = str(e)
        # Rank 0 worked while the others waited here; a failure is raised on every rank alike.
        error = comm.bcast(error, root=0)
    if error:
        raise StageError(error)
    if rank == 0:
        summary = json.loads((out / "summary.json").read_text())
        print("\n".join(summary_lines(summary, out / "index.html")), flush=True)
    return 0
