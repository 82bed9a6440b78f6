"""The report stage: statistics, the L_X baseline and oracles, the paper's figures, ``<workdir>/report/index.html``.

The report is one unit of work done by rank 0; other ranks (when launched in an MPI job) only
take part in opening and closing the store. The L_X measurements go into the store's ``report``
group, whose done flag marks the report finished.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HpcmassError, StageError
from ..mpi import get_logger, on_root, stage_comm
from ..store import Store, stage_dir
from ..store.readers import image_shape

_NEEDS = ("catalog", "observe", "dataset", "train", "interpret")


def run(workdir, params, comm=None, *, restart_from: str | None = None, log=None) -> dict:
    """Make the report (rank 0; the other ranks of ``comm`` only open and close the store; None: serial).

    Returns the report's summary (``<workdir>/report/summary.json``), also when it was already made.
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    workdir = Path(workdir)
    from .build import SKY_FIELDS, build_report, needs_sky_background, read_run, sky_background_levels
    from .lx import aperture_variants

    with Store.read(workdir) as s:
        for stage in _NEEDS:
            s.require_complete(stage, params.file)
        n, n_axes = image_shape(s)[:2]
        read = {}  # rank 0 alone reads the run; an error in it stops every rank, none waits for it
        on_root(comm, lambda: read.update(data=read_run(s, params)))
        data = read.get("data")
    out = stage_dir(workdir, "report")
    with Store.open_stage(workdir, params, "report", comm, n_units=1, unit="report",
                          restart_from=restart_from, log=log) as st:
        variants = [v.key for v in aperture_variants(params.report.lx_aperture_errors)]
        dims = dict(clusters=n, axes=n_axes, apertures=len(variants))
        ds = {name: st.require(name, **dims) for name in ("lx_net_counts", "lx_covered", "lx_erg_s",
                                                           "lx_pred_log_m500c")}
        st.set_attrs(lx_apertures=variants)

        def build() -> str | None:
            try:
                sky = None
                if needs_sky_background(data.observe):
                    log.info("the mocks hold point sources or a foreground: measuring the L_X background on %d "
                             "blank-sky mocks", SKY_FIELDS)
                    sky = sky_background_levels(workdir, params, log=log)
                lx, _ = build_report(data, params, out, st.provenance(), stage_dir(workdir, "observe") / "approx", sky)
                ds["lx_net_counts"][...] = lx.net_counts
                ds["lx_covered"][...] = lx.covered
                ds["lx_erg_s"][...] = lx.lx
                ds["lx_pred_log_m500c"][...] = lx.pred
                st.mark_done(0)
            except HpcmassError as e:  # raised on every rank once the store is closed
                return str(e)
            return None

        error = None
        if st.pending():
            error = on_root(comm, build)  # the other ranks sleep while rank 0 works
        else:
            log.info("the report is already done (%s); use --restart-from report to make it again", out / "index.html")
    if error:
        raise StageError(error)
    return json.loads((out / "summary.json").read_text())
