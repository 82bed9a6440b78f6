"""One cluster's mock observations with pyXSIM and SOXS: photons once, then per axis projection,
foreground absorption, the instrument and binning. Pure with respect to MPI: everything random
comes from seeds keyed by (global seed, cluster, "photons" or axis), so a cluster's images are
the same whichever rank makes them and however often.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..constants import K_PER_KEV
from ..params import ObserveParams
from ..seeding import int_seed
from . import imaging
from .xray import SKY_CENTER_DEG, XrayData


#: Sky pixels per exposure-map pixel: 16 x 0.492" = 7.9" for ACIS-I (1 s a view; 4 takes 4 s, 1 100 s).
EXPOSURE_REBLOCK = 16


@dataclass(frozen=True)
class Setup:
    """What every cluster's observation shares (identical on every rank)."""

    observe: ObserveParams
    data: XrayData
    instrument: str  # SOXS registry name
    photon_area_cm2: float
    seed: int


@dataclass
class Observation:
    images: np.ndarray  # (n_axes, bands, pixels, pixels) int32
    n_photons: int
    seconds: dict[str, float] = field(default_factory=dict)  # load, photons, projection, instrument
    event_files: list[Path] = field(default_factory=list)
    exposure: np.ndarray | None = None  # (n_axes, pixels, pixels) float32, unless observe.full_field
    exposure_ks: np.ndarray | None = None  # (n_axes,) each observation's exposure, with observe.exposure_range_ks


def _hot_gas_filter(kt_min_kev: float) -> str:
    """Register (once) a yt particle filter: gas hotter than kt_min and not star-forming."""
    import yt
    from yt.data_objects.particle_filters import filter_registry

    name = f"hpcmass_xray_{kt_min_kev:g}".replace(".", "p")
    if name not in filter_registry:
        t_min = kt_min_kev * K_PER_KEV

        def hot_not_starforming(pfilter, data):
            ftype = pfilter.filtered_type
            return (data[ftype, "temperature"].to_value("K") > t_min) & (data[ftype, "star_formation_rate"].d == 0)

        # Filtering the "gas" alias keeps yt's derived gas fields (emission_measure) on the filtered type.
        yt.add_particle_filter(name, function=hot_not_starforming, filtered_type="gas",
                               requires=["temperature", "star_formation_rate"])
    return name


def load_cutout(path: Path):
    import yt

    ds = yt.load(str(path))
    if type(ds).__name__ != "ArepoHDF5Dataset":
        raise ValueError(f"{path}: yt reads it as {type(ds).__name__}, not an Arepo/TNG cutout "
                         f"(needs a Header, PartType0/GFM_* or Config/VORONOI, and no FOF group)")
    return ds


def observe_cluster(cutout: Path, center_ckpch, r500c_kpc: float, cluster_id: int, setup: Setup,
                    scratch: Path, events_dir: Path | None = None) -> Observation:
    """Images (one per axis of ``setup.observe.axes``) of one cluster; scratch files removed after."""
    work = Path(scratch).resolve() / f"cluster{cluster_id}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # SOXS looks for its data files in the working directory before its hash-checked store:
        # work in an empty one, so that no stray same-named file is used instead.
        with contextlib.chdir(work):
            return _observe(Path(cutout).resolve(), center_ckpch, r500c_kpc, cluster_id, setup, work,
                            Path(events_dir).resolve() if events_dir is not None else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _observe(cutout: Path, center_ckpch, r500c_kpc: float, cluster_id: int, setup: Setup, work: Path,
             events_dir: Path | None) -> Observation:
    import pyxsim

    p = setup.observe
    seconds = {}
    t0 = time.perf_counter()
    ds = load_cutout(cutout)
    ftype = _hot_gas_filter(p.kt_min_kev)
    ds.add_particle_filter(ftype)
    center = ds.arr(np.asarray(center_ckpch, dtype=np.float64), "code_length")
    # A cube around the centre covering the field of view's corners and region_r500 R500c.
    d_a_kpc = ds.cosmology.angular_diameter_distance(0.0, p.redshift).to_value("kpc")
    fov_half_diag_kpc = d_a_kpc * np.deg2rad(p.fov_arcmin / 60.0) / np.sqrt(2.0)
    half = ds.quan(max(fov_half_diag_kpc, p.region_r500 * r500c_kpc), "kpc").to("code_length")
    half = min(half, 0.5 * ds.domain_width.min())
    region = ds.box(center - half, center + half)
    model = pyxsim.CIESourceModel(
        "apec", p.spectrum_emin_kev, p.spectrum_emax_kev, p.spectrum_bins, (ftype, "metallicity"),
        temperature_field=(ftype, "temperature"), emission_measure_field=(ftype, "emission_measure"),
        kT_min=p.kt_min_kev, abund_table=p.abund_table, model_vers=setup.data.apec_version,
        model_root=setup.data.soxs_data_dir if setup.data.mode == "approximate" else None,
        prng=int_seed(setup.seed, "observe", cluster_id, "photons"),
    )
    seconds["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    photons = str(work / "photons")
    n_photons, _ = pyxsim.make_photons(photons, region, p.redshift, setup.photon_area_cm2,
                                       (p.photon_exposure_ks, "ks"), model, center=center)
    del model, region, ds
    gc.collect()
    seconds["photons"] = time.perf_counter() - t0
    seconds["projection"] = seconds["instrument"] = 0.0
    images, kept, exposure, exposure_ks = [], [], [], []
    for axis in p.axes:
        # One generator per (cluster, axis), used in turn by projection and instrument.
        prng = np.random.default_rng(int_seed(setup.seed, "observe", cluster_id, axis))
        t0 = time.perf_counter()
        source = None
        if n_photons and pyxsim.project_photons(photons, str(work / f"events_{axis}"), axis, SKY_CENTER_DEG,
                                                absorb_model=p.absorb_model, nH=p.nh_1e22, prng=prng):
            pyxsim.EventList(str(work / f"events_{axis}.h5")).write_to_simput(str(work / axis), overwrite=True)
            source = str(work / f"{axis}_simput.fits")
        seconds["projection"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        evt, view = sky_field(setup, work / f"evt_{axis}.fits", prng, source)
        exposure_ks.append(view.exposure_ks)
        if not p.full_field:  # no event at all (no background either): nothing says where the detector was
            exposure.append(exposure_image(evt, p, setup.data.arf) if evt is not None
                            else np.full((p.image_pixels, p.image_pixels), np.nan, dtype=np.float32))
        if evt is not None:
            images.append(imaging.image_from_event_file(evt, fov_arcmin=p.fov_arcmin, pixels=p.image_pixels,
                                                        bands=p.bands))
            if events_dir is not None:
                kept.append(_keep(evt, events_dir / f"cluster{cluster_id:06d}_{axis}_evt.fits"))
        else:
            images.append(np.zeros((len(p.bands), p.image_pixels, p.image_pixels), dtype=np.int32))
        seconds["instrument"] += time.perf_counter() - t0
    return Observation(np.stack(images), int(n_photons), seconds, kept, np.stack(exposure) if exposure else None,
                       None if p.exposure_range_ks is None else np.array(exposure_ks, dtype=np.float32))


@dataclass(frozen=True)
class Pointing:
    """How one observation was taken: roll angle [deg], the sky centre's shift from the aimpoint [arcsec]
    (None: on it) and exposure [ks]."""

    roll_deg: float
    shift_arcsec: np.ndarray | None
    exposure_ks: float


def pointing(prng: np.random.Generator, observe: ObserveParams) -> Pointing:
    """One observation's :class:`Pointing`, drawn from ``prng`` only for the options that are on, so the
    paper's mocks draw nothing (and each option's draws come after the earlier options', so turning a
    later one on leaves the others' draws as they were)."""
    roll = float(prng.uniform(0.0, 360.0)) if observe.random_roll else 0.0
    shift = None
    if observe.pointing_offset_arcmin:
        r, phi = 60.0 * observe.pointing_offset_arcmin * np.sqrt(prng.uniform()), prng.uniform(0.0, 2.0 * np.pi)
        shift = np.array([r * np.cos(phi), r * np.sin(phi)])
    exposure = observe.exposure_ks
    if observe.exposure_range_ks is not None:  # log-uniform: as many 10-20 ks observations as 100-200 ks ones
        exposure = float(np.exp(prng.uniform(*np.log(observe.exposure_range_ks))))
    return Pointing(roll, shift, exposure)


def sky_field(setup: Setup, path: Path, prng, source: str | None = None) -> tuple[Path | None, Pointing]:
    """A mock observation through ``setup``'s instrument with its backgrounds (particle, foreground, point
    sources as ``observe`` says), taken as :func:`pointing` draws, and the SIMPUT catalogue ``source``
    (None: blank sky), written to ``path`` in the working directory's SOXS context: ``(path, pointing)``,
    the path None when not one event was detected (SOXS then writes no file)."""
    import soxs

    p = setup.observe
    view = pointing(prng, p)
    soxs.instrument_simulator(source, str(path), (view.exposure_ks, "ks"), setup.instrument, SKY_CENTER_DEG,
                              overwrite=True, instr_bkgnd=p.particle_background, foreground=setup.data.foreground,
                              ptsrc_bkgnd=p.point_sources, roll_angle=view.roll_deg, aimpt_shift=view.shift_arcsec,
                              prng=prng)
    return (path if path.exists() else None), view


def _map_energy_kev(observe: ObserveParams) -> float:
    """The energy the exposure maps are made at: the band's geometric mean."""
    return float(np.sqrt(observe.emin_kev * observe.emax_kev))


def write_exposure_map(evt: Path, observe: ObserveParams) -> Path:
    """SOXS's exposure map of the mock ``evt`` (its chips, dither, roll and pointing) at the band's geometric-mean
    energy, in :data:`EXPOSURE_REBLOCK`-times coarser sky pixels, normalised to the effective area [cm²], written
    beside it: its path."""
    import soxs

    path = evt.with_name(f"{evt.stem}_expmap.fits")
    soxs.make_exposure_map(str(evt), str(path), _map_energy_kev(observe), overwrite=True, reblock=EXPOSURE_REBLOCK)
    return path


def map_exposure_image(expmap: Path, observe: ObserveParams, arf: str) -> np.ndarray:
    """The fraction of the exposure each image pixel (the field centred on the tangent point, as the observe stage
    bins its mocks) was on the detector: the map ``expmap`` of :func:`write_exposure_map` over the effective area of
    ``arf`` at the map's energy."""
    import soxs
    from astropy.io import fits

    with fits.open(expmap, memmap=False) as hdul:
        h, values = hdul["EXPMAP"].header, np.asarray(hdul["EXPMAP"].data, dtype=np.float64)
    full = float(soxs.AuxiliaryResponseFile(arf).interpolate_area(_map_energy_kev(observe)).value)
    return imaging.exposure_fraction(values, full, imaging.tangent_map_pixel((h["CRPIX1"], h["CRPIX2"]),
                                                                             abs(h["CDELT1"])),
                                     fov_arcmin=observe.fov_arcmin, pixels=observe.image_pixels)


def exposure_image(evt: Path, observe: ObserveParams, arf: str) -> np.ndarray:
    """:func:`map_exposure_image` of the mock ``evt``'s exposure map, written for it and removed after."""
    path = write_exposure_map(evt, observe)
    try:
        return map_exposure_image(path, observe, arf)
    finally:
        path.unlink()


def _keep(src: Path, dst: Path) -> Path:
    """Move a finished event file into place atomically (scratch may be another file system)."""
    with atomic_path(dst) as tmp:
        shutil.move(src, tmp)
    return dst


@contextlib.contextmanager
def quiet_libraries():
    """Silence yt/pyXSIM/SOXS chatter and their per-call progress bars (every rank would print them)."""
    import logging

    for name in ("yt", "pyxsim", "soxs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield
