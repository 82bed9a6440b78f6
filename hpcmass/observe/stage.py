"""The observe stage: mock X-ray images (Chandra ACIS-I by default) of every catalogued cluster (MPI task farm).

Ranks take whole clusters, most gas cells first, through a shared counter (no idle coordinator);
each writes its clusters' images straight into the store and marks them done. A cluster's
randomness depends only on (seed, cluster, axis), so images do not depend on the rank count or
on resumes. A failing cluster is recorded with its reason and the others go on; the command then
exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import images as geometry
from ..errors import StageError, StoreError
from ..mpi import dynamic_tasks, get_logger, on_root, progress, stage_comm
from ..store import Store, stage_dir
from ..store.readers import Catalog, load_catalog, observe_data_mode
from . import approx, simulate, xray

_PARTS = ("load", "photons", "projection", "instrument")


def _inputs(workdir: Path, params_file: str | None, restart_from: str | None) -> tuple[Catalog, str | None]:
    """The catalogue, and the data mode of images already stored (None if they are to be discarded)."""
    with Store.read(workdir) as store:
        store.require_complete("catalog", params_file)
        prior = None if restart_from in ("catalog", "observe") else observe_data_mode(store)
        return load_catalog(store), prior


def _prepare_data(observe, approx_dir: Path, prior_mode: str | None, config_home: Path) -> xray.XrayData:
    data = xray.resolve_data(observe, approx_dir, config_home)
    if prior_mode is not None and prior_mode != data.mode:
        raise StoreError(f"the store's observe images were made with data_mode={prior_mode}, this run would use "
                         f"{data.mode}; set observe.data={prior_mode}, or re-run with --restart-from observe")
    return data


def _set_up_soxs(comm, observe, data: xray.XrayData, approx_dir: Path, config_home: Path, log) -> str:
    """SOXS imported and configured for ``data`` (the approximate files written once), the instrument
    registered; returns its registry name."""
    xray.import_soxs(data, config_home)
    if data.mode == "approximate":
        if comm.Get_rank() == 0 and not approx.approx_files_current(approx_dir):
            log.info("writing the approximate thermal table, response and background to %s", approx_dir)
            approx.write_approx_files(approx_dir)
        comm.Barrier()
    return xray.register_instrument(observe, data)


def instrument_setup(workdir, params, scratch: Path, log=None) -> simulate.Setup:
    """The observe stage's instrument and data set up again in this process (serial), for mocks made after the
    stage with the same instrument and backgrounds: blank-sky fields (:func:`simulate.sky_field`)."""
    comm, p = stage_comm(None), params.observe
    workdir = Path(workdir).resolve()
    approx_dir = stage_dir(workdir, "observe") / "approx"
    with Store.read(workdir) as store:
        mode = observe_data_mode(store)
    data = _prepare_data(p, approx_dir, mode, scratch / "config")
    instrument = _set_up_soxs(comm, p, data, approx_dir, scratch / "config", log or get_logger(comm))
    return simulate.Setup(p, data, instrument, math.nan, params.run.seed)


def blank_sky_fields(workdir, params, seeds, log=None):
    """Blank-sky mocks through the observe stage's instrument and backgrounds (:func:`instrument_setup`, serial), one
    per seed: yields ``(setup, event file or None, pointing)`` (None: not one event), each file replaced by the
    next, in a scratch directory removed after."""
    with tempfile.TemporaryDirectory(prefix="hpcmass-blank-") as scratch:
        scratch = Path(scratch)
        setup = instrument_setup(workdir, params, scratch, log)
        with contextlib.chdir(scratch), simulate.quiet_libraries():  # SOXS prefers same-named files in the cwd
            logging.getLogger("soxs").setLevel(logging.ERROR)  # not its warning, once per field, that no source was given
            for seed in seeds:
                evt, view = simulate.sky_field(setup, scratch / "blank_evt.fits", np.random.default_rng(seed))
                yield setup, evt, view


def run(workdir, params, comm=None, *, restart_from: str | None = None, log=None) -> dict:
    """Observe every catalogued cluster not yet done; collective over ``comm`` (None: serial).

    Returns the store summary (done, failed, total); raises StageError if any cluster failed.
    """
    comm = stage_comm(comm)
    log = log or get_logger(comm)
    p = params.observe
    rank = comm.Get_rank()
    workdir = Path(workdir).resolve()  # SOXS runs in a scratch directory
    out_dir = stage_dir(workdir, "observe")
    cat, prior_mode = on_root(comm, _inputs, workdir, params.file, restart_from)
    n = len(cat)
    # Each rank's scratch (photon lists, SIMPUT and event files, SOXS's config) in its own directory.
    with tempfile.TemporaryDirectory(prefix=f"hpcmass-observe-r{rank}-") as scratch:
        scratch = Path(scratch)
        data = on_root(comm, _prepare_data, p, out_dir / "approx", prior_mode, scratch / "config")
        log.info("X-ray data: %s", data.describe())
        instrument = _set_up_soxs(comm, p, data, out_dir / "approx", scratch / "config", log)
        spec = xray.instrument_spec(p, data)
        if spec["fov"] < p.fov_arcmin:
            log.warning("the instrument's %g' field is smaller than the %g' image field: the image's edges get no "
                        "events", spec["fov"], p.fov_arcmin)
        with contextlib.chdir(scratch):  # SOXS would prefer a same-named file in the working directory
            peak = xray.arf_peak_area(data)
        if p.photon_area_cm2 is not None and p.photon_area_cm2 < peak:
            raise StageError(f"observe.photon_area_cm2 = {p.photon_area_cm2}: expected at least the ARF's peak "
                             f"effective area ({peak:.1f} cm^2), or null to use it")
        setup = simulate.Setup(p, data, instrument, float(p.photon_area_cm2 or peak), params.run.seed)
        attrs = {
            "data_mode": data.mode,
            "data_description": data.describe(),
            "data_files": json.dumps(data.as_dict(), sort_keys=True),
            "instrument": json.dumps(spec, sort_keys=True),
            "axes": ",".join(p.axes),
            "exposure_ks": p.exposure_ks,
            "redshift": p.redshift,
            "band_kev": [p.emin_kev, p.emax_kev],
            "bands_kev": np.array(p.bands),
            "pixel_arcsec": geometry.pixel_arcsec(p.fov_arcmin, p.image_pixels),
            "pixel_kpc": geometry.pixel_arcsec(p.fov_arcmin, p.image_pixels)
            * geometry.kpc_per_arcsec(p.redshift, *cat.cosmology),
            "photon_area_cm2": setup.photon_area_cm2,
            "foreground": data.foreground,
            "point_sources": p.point_sources,
            "random_roll": p.random_roll,
            "pointing_offset_arcmin": p.pointing_offset_arcmin,
            "exposure_range_ks": [] if p.exposure_range_ks is None else list(p.exposure_range_ks),
            "seconds_parts": ",".join(_PARTS),
        }
        events_dir = out_dir / "events" if p.keep_events else None
        with Store.open_stage(workdir, params, "observe", comm, n_units=n, unit="cluster",
                              restart_from=restart_from, log=log) as st:
            images = st.require("images", axes=len(p.axes), bands=len(p.bands), pixels=p.image_pixels)
            n_photons = st.require("n_photons")
            seconds = st.require("seconds", parts=len(_PARTS))
            exposure = None if p.full_field else st.require("exposure", axes=len(p.axes), pixels=p.image_pixels)
            view_ks = None if p.exposure_range_ks is None else st.require("view_exposure_ks", axes=len(p.axes))
            st.set_attrs(**attrs)
            todo = st.pending()
            exposure_text = (f"{p.exposure_ks:g} ks" if p.exposure_range_ks is None else
                             "{:g}-{:g} ks".format(*p.exposure_range_ks))
            log.info("observing %d of %d clusters on %d rank(s), %s axes, %s, %s (%s data)", len(todo), n,
                     comm.Get_size(), "".join(p.axes), exposure_text, geometry.bands_label(p.bands), data.mode)
            failed, mine = _observe(comm, st, todo, cat, setup, scratch, events_dir, (images, n_photons, seconds,
                                                                                     exposure, view_ks), log)
            ranks = comm.allgather({**mine, "peak_rss_mb": _peak_rss_mb()})
            st.set_attrs(last_run_rank_stats=json.dumps(ranks))
            summary = st.summary()
    for r, stats in enumerate(ranks):
        log.info("rank %d: %d clusters in %.1f s (%.1f s CPU), peak memory %.0f MB", r, stats["clusters"],
                 stats["busy_s"], stats["cpu_s"], stats["peak_rss_mb"])
    failures = [f for part in comm.allgather(failed) for f in part]
    if failures:
        shown = "; ".join(f"cluster {cat.cluster_id[i]}: {why}" for i, why in sorted(failures)[:3])
        raise StageError(f"{len(failures)} of {n} clusters failed ({shown}{'; ...' if len(failures) > 3 else ''}); "
                         f"the other {summary['done']} are stored; re-run the same command to retry the failed ones")
    log.info("observe: %d/%d clusters done", summary["done"], n)
    return summary


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _observe(comm, st, todo, cat: Catalog, setup, scratch, events_dir, datasets, log) -> tuple[list, dict]:
    """This rank's share of the clusters into ``datasets`` (images, n_photons, seconds, exposure map or None, view
    exposure or None); returns [(unit, reason)] of those that failed here, and its cluster count and busy time."""
    images, n_photons, seconds, exposure, view_ks = datasets
    failed, count = [], 0
    t_start, cpu_start = time.perf_counter(), time.process_time()
    bar = progress(comm, total=st.n_units, desc="observe", initial=st.n_units - len(todo))
    for i in dynamic_tasks(comm, todo, costs=[cat.n_gas_cells[i] for i in todo]):
        try:
            with simulate.quiet_libraries():
                obs = simulate.observe_cluster(cat.cutout[i], cat.center_ckpch[i], float(cat.r500c_kpc[i]),
                                               int(cat.cluster_id[i]), setup, scratch, events_dir)
        except Exception as e:  # one bad cluster must not stop the others: record why, go on
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            log.warning("cluster %d failed: %s", cat.cluster_id[i], reason, exc_info=log.isEnabledFor(10))
            st.mark_failed(i, reason)
            failed.append((i, reason))
            continue
        images[i] = obs.images
        n_photons[i] = obs.n_photons
        seconds[i] = [obs.seconds[k] for k in _PARTS]
        if exposure is not None:
            exposure[i] = obs.exposure
        if view_ks is not None:
            view_ks[i] = obs.exposure_ks
        st.mark_done(i)
        count += 1
        if comm.Get_rank() == 0:
            bar.n = int(np.count_nonzero(st.states() == 1))
            bar.refresh()
            log.debug("cluster %d: %d photons, %s", cat.cluster_id[i], obs.n_photons,
                      ", ".join(f"{k} {v:.1f}s" for k, v in obs.seconds.items()))
    busy, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    bar.close()
    return failed, {"clusters": count, "busy_s": round(busy, 3), "cpu_s": round(cpu, 3)}
