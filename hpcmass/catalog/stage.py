"""The catalog stage: the cluster sample's cutouts and its table in the store.

``source: synthetic`` first writes a TNG-layout input directory under ``<workdir>/catalog``
(group catalogue, then one cutout per cluster inside the task farm); ``source: tng300`` reads
the directory ``hpcmass fetch-tng`` staged. From there both run the same loader: select the
haloes in the mass range, read each cutout, measure it, fill its row, mark it done. A cluster
whose input is bad is marked failed with the reason; the others go on; the stage then fails
with a summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import ParamsError, StageError
from ..mpi import dynamic_tasks, get_logger, on_root, progress, stage_comm
from ..params import Params
from ..report.lx import fit_power_law
from ..report.stats import bootstrap_clusters
from ..store import LAYOUT, Store, stage_dir
from ..store.readers import load_catalog
from . import generate as gen
from . import physics as ph
from . import tng

#: The 3D gas quantities whose power-law scatter of ln M at fixed value the stage reports: how
#: much mass the sample itself lets each one carry (the report's oracle rows, before any image).
SCATTER_PROXIES = (("mgas500_msun", "M_gas"), ("lx_ce_erg_s", "L_X,ce"), ("tx_kev", "T_X"), ("lx_ci_erg_s", "L_X,ci"))
#: Row entries measured on the cells (see tng.measure_cluster), all declared in store.LAYOUT.
MEASURED = ("n_gas_cells", "n_hot_cells", "mgas500_msun", "lx_ce_erg_s", "lx_ci_erg_s", "tx_kev", "k0_kev_cm2",
            "cool_core")
_PATH_LEN = int(LAYOUT["catalog"]["cutout"][1][1:])


def synthetic_models(params: Params) -> list[ph.ClusterModel]:
    cp = params.catalog
    f_gas_scatter = ph.F_GAS_SCATTER[cp.generator] if cp.f_gas_scatter is None else cp.f_gas_scatter
    return [ph.draw_cluster(params.run.seed, k, mass_function=cp.mass_function, log_m500c_min=cp.log_m500c_min,
                            log_m500c_max=cp.log_m500c_max, box_ckpch=cp.box_size_ckpch,
                            cool_core_fraction=cp.cool_core_fraction, f_gas_scatter=f_gas_scatter,
                            concentration_scatter=cp.concentration_scatter,
                            substructure_mean=cp.substructure_mean, edge_fraction=cp.edge_fraction,
                            generator=cp.generator)
            for k in range(cp.n_clusters)]


def halo_selection(params: Params) -> tuple[tng.Selection, tuple[tng.Selection, ...]]:
    """The params' TNG halo selection, and every candidate rule at the params' bounds (their counts
    are printed so that a user can see which gives the sample size they expect)."""
    cp = params.catalog
    rules = {"m500c": tng.Selection("m500c", cp.log_m500c_min, cp.log_m500c_max),
             "m200c": tng.Selection("m200c", cp.selection_log_min),
             "fof": tng.Selection("fof", cp.selection_log_min)}
    return rules[cp.selection], tuple(rules.values())


def resolution(params: Params) -> gen.Resolution:
    cp = params.catalog
    return gen.Resolution(cell_mass=cp.cell_mass_msun, max_cells=cp.max_gas_cells, r_max=cp.r_max_r500)


def _stored_path(path: Path, workdir: Path) -> bytes:
    """Cutout path relative to the workdir when inside it, else absolute."""
    path, workdir = path.resolve(), workdir.resolve()
    text = str(path.relative_to(workdir)) if path.is_relative_to(workdir) else str(path)
    if len(text.encode()) >= _PATH_LEN:
        raise ParamsError(f"cutout path {text} is longer than the store's {_PATH_LEN - 1} bytes; use a shorter "
                          f"--workdir or catalog.tng_dir")
    return text.encode()


def run(workdir: str | Path, params: Params, comm=None, *, restart_from: str | None = None, log=None) -> dict:
    """Build or read the sample and fill /catalog; collective over ``comm`` (None: serial).

    Returns the store summary (done, failed, total); raises StageError if any cluster failed.
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    cp, seed = params.catalog, params.run.seed
    workdir = Path(workdir)
    synthetic = cp.source == "synthetic"
    snapshot = 99 if synthetic else cp.tng_snapshot
    tng_dir = stage_dir(workdir, "catalog") if synthetic else Path(cp.tng_dir)

    selection, candidates = halo_selection(params)

    def select():
        return tng.open_inputs(tng_dir, snapshot, selection, () if synthetic else candidates)

    if synthetic:
        models, res = synthetic_models(params), resolution(params)
        plans = [gen.cell_plan(m, ph.profiles(m), res) for m in models]
        gen.check_one_cell_mass(models, plans, res)
        n = cp.n_clusters
    else:
        inputs = on_root(comm, select)
        n = len(inputs.group_id)
        log.info("catalog: the group catalogue holds %s; catalog.selection=%s takes %d",
                 tng.describe_counts(inputs.counts), cp.selection, n)
        mismatch = tng.sample_size_mismatch(inputs, selection, cp.n_clusters)
        if mismatch:
            raise ParamsError(mismatch)
    t0 = time.monotonic()
    with Store.open_stage(workdir, params, "catalog", comm, n_units=n, unit="cluster", restart_from=restart_from,
                          log=log) as st:
        ds = {name: st.require(name) for name in LAYOUT["catalog"]}
        todo = st.pending()
        if synthetic:
            def write_groups():
                if todo or not tng.group_catalog_path(tng_dir, snapshot).exists():
                    gen.write_synthetic_group_catalog(tng_dir, models, res, cp.box_size_ckpch)
                return select()
            inputs = on_root(comm, write_groups)
            if not np.array_equal(inputs.group_id, np.arange(n)):
                raise StageError(f"{tng.group_catalog_path(tng_dir, snapshot)} does not list synthetic clusters "
                                 f"0..{n - 1}; re-run with --restart-from catalog")
            costs = [plans[i].total for i in todo]
        else:
            costs = on_root(comm, lambda: [_file_size(inputs.cutout(inputs.group_id[i])) for i in todo])
        st.set_attrs(source=cp.source, box_size_ckpch=inputs.box_size, hubble=inputs.hubble, omega_m=inputs.omega_m,
                     omega_lambda=inputs.omega_l, snapshot_redshift=inputs.redshift, snapshot=snapshot,
                     input_dir=str(tng_dir), center_convention="GroupPos wrapped into [0, BoxSize); cutouts hold box "
                     "coordinates (minimum-image distances)")
        stored = {i: _stored_path(inputs.cutout(inputs.group_id[i]), workdir) for i in todo}
        log.info("catalog: %d %s clusters, %d to do, input %s", n, cp.source, len(todo), tng_dir)
        with progress(comm, len(todo), "clusters") as bar:
            for i in dynamic_tasks(comm, todo, costs):
                gid = int(inputs.group_id[i])
                path = inputs.cutout(gid)
                try:
                    if synthetic:
                        gen.write_synthetic_cutout(path, models[i], res, seed, cp.box_size_ckpch)
                    row = tng.measure_cluster(path, inputs, i)
                except tng.InputError as e:
                    st.mark_failed(i, f"halo {gid}: {e}")
                    log.warning("cluster %d (halo %d) failed: %s", i, gid, e)
                    bar.update()
                    continue
                ds["cluster_id"][i] = gid
                ds["log_m500c"][i] = inputs.log_m500c[i]
                ds["r500c_kpc"][i] = inputs.r500c_kpc[i]
                ds["center_ckpch"][i] = inputs.pos[i]
                ds["cutout"][i] = stored[i]
                for name in MEASURED:
                    ds[name][i] = row[name]
                st.mark_done(i)
                bar.update()
        summary = st.summary()
    log.info("catalog: %d/%d clusters done in %.1f s", summary["done"], summary["total"], time.monotonic() - t0)
    if not summary["failed"] and n >= 10:
        scatter = on_root(comm, lambda: mass_scatter(workdir, params.report.bootstrap_resamples, seed))
        log.info("catalog: ln M at fixed 3D %s (power laws, 68%% cluster bootstrap)", ", ".join(
            f"{label} {v:.3f} [{lo:.3f}, {hi:.3f}]" for label, (v, lo, hi) in scatter.items()))
    if summary["failed"]:
        shown = "; ".join(f"cluster {i}: {why}" for i, why in list(summary["failed"].items())[:3])
        more = len(summary["failed"]) - 3
        rest = f"; and {more} more in /catalog/error of the store" if more > 0 else ""
        raise StageError(f"{len(summary['failed'])} of {n} clusters failed ({shown}{rest}); fix the inputs and "
                         f"re-run to retry them")
    return summary


def mass_scatter(workdir: Path, n_resamples: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """RMS of ln M500c about a power law in each SCATTER_PROXIES quantity, with a 68% interval."""
    cat = load_catalog(workdir)
    out = {}
    for key, label in SCATTER_PROXIES:
        rows = np.column_stack([np.log10(cat.columns[key]), cat.log_m500c])
        def scatter(t):
            return np.log(10.0) * fit_power_law(t[:, 0], t[:, 1]).scatter
        _, lo, hi = bootstrap_clusters(rows, scatter, n_resamples, seed)
        out[label] = (float(scatter(rows)), float(lo[0]), float(hi[0]))
    return out


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
