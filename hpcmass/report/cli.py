"""``hpcmass report``: the report stage (:mod:`hpcmass.report.stage`) from the command line; rank 0
prints the report's path, a three-line summary and the interpretation's verdict."""

from __future__ import annotations

from ..mpi import get_logger
from ..store import stage_dir
from . import stage
from .stats import scatter_percent

HELP = ("statistics with 68% intervals, the core-excised L_X baseline (exact, erred and iterated apertures), "
        "oracle rows, figures 1 and 3-7 (with the interpretation's nulls and occlusion), HTML report and "
        "clusters.csv (rank 0)")


def add_arguments(parser) -> None:
    """No options beyond the common ones: everything is in the ``report`` params section."""


def _fit(d: dict, key: str = "sigma") -> str:
    fmt = "{:+.3f}" if key == "mu" else "{:.3f}"
    if d["n_clusters"] < 2:
        return f"{fmt.format(d[key])} ({d['n_clusters']} cluster, no interval)"
    return f"{fmt.format(d[key])} [{fmt.format(d[key + '_lo'])}, {fmt.format(d[key + '_hi'])}]"


def _percent(d: dict) -> str:
    return f"{d['percent']:.1f}% [{scatter_percent(d['sigma_lo']):.1f}, {scatter_percent(d['sigma_hi']):.1f}]"


def summary_lines(summary: dict, html) -> list[str]:
    """The report's path and a few lines, every sigma and mu with its 68% interval: CNN scatter and bias
    beside the paper's, the L_X baseline for each aperture, the oracles; then the interpretation's
    verdict (gradients against nulls, occlusion)."""
    cnn, paper = summary["cnn"], summary["paper"]
    lx = summary["lx_image"]
    paper_lx = ", ".join(f"{v}%" for v in paper["lx_percent"].values())
    oracles = "; ".join(f"{o['label']} {_percent(o['all'])}" for o in summary["oracles"].values())
    lines = [
        f"report: {html}",
        f"  CNN  all folds  sigma {_fit(cnn['all'])} dex ({cnn['all']['percent']:.1f}%), "
        f"mu {_fit(cnn['all'], 'mu')}   [paper: {paper['sigma']:.3f}, {paper['mu']:+.3f}]",
        f"  CNN  best fold (lowest validation loss: {cnn['best_fold']})  sigma {_fit(cnn['best'])} dex, "
        f"in the subset {_fit(cnn['best_subset'])}   "
        f"[paper: {paper['best_sigma']:.3f}; {paper['best_subset_sigma']:.3f}]",
        "  L_X  core-excised mass scatter, 68% intervals: "
        + "; ".join(f"{k} {_percent(v['all'])}" for k, v in lx.items())
        + f"   [paper: {paper_lx} at 3%, 5% R500 error]",
    ]
    if oracles:
        lines.append(f"  Oracles (gas cells, 3D, true R500c): {oracles}")
    return lines + [f"  {line}" for line in summary["interpretation"]["verdict"]]


def run(args, params, comm) -> int:
    summary = stage.run(args.workdir, params, comm, restart_from=args.restart_from, log=get_logger(comm))
    if comm.Get_rank() == 0:
        print("\n".join(summary_lines(summary, stage_dir(args.workdir, "report") / "index.html")), flush=True)
    return 0
