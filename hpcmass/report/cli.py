"""``hpcmass report``: the report stage (:mod:`hpcmass.report.stage`) from the command line; rank 0
prints the report's path, a three-line summary and the interpretation's verdict."""

from __future__ import annotations

from ..mpi import get_logger
from ..store import stage_dir
from . import stage

HELP = ("statistics, core-excised L_X baseline, figures 1 and 3-7 (with the interpretation's nulls and "
        "occlusion), HTML report and clusters.csv (rank 0)")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``report`` params section."""


def summary_lines(summary: dict, html) -> list[str]:
    """The report's path and three lines: CNN scatter and bias, and the L_X baseline, beside the paper's;
    then the interpretation's verdict (gradients against nulls, occlusion)."""
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
        *(f"  {line}" for line in summary["interpretation"]["verdict"]),
    ]


def run(args, params, comm) -> int:
    summary = stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    if comm.Get_rank() == 0:
        print("\n".join(summary_lines(summary, stage_dir(args.workdir, "report") / "index.html")), flush=True)
    return 0
