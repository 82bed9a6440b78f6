"""Event list -> training image: one pure binning rule shared by the observe stage and ``hpcmass predict``.

An image is the square ``fov_arcmin`` field centred on a sky position, cut into ``pixels`` x
``pixels`` pixels, counting the events of each energy band ``lo <= E < hi`` keV in its own channel:
``(bands, pixels, pixels)``. Rows run along the event
file's sky Y column and columns along X (the FITS image convention, first row at the bottom),
so a Chandra event file from CIAO and a SOXS one bin the same way. The centre defaults to the
sky pixel of the file's tangent point (SOXS's pointing, where the observe stage puts the
cluster); for a real observation pass the cluster's RA/Dec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


#: Exposure-map values below this fraction of a full exposure are the FFT's round-off, not exposure.
ROUNDOFF = 1e-6


@dataclass(frozen=True)
class Events:
    """The columns and sky-pixel geometry of an X-ray event list."""

    x: np.ndarray  # sky pixels
    y: np.ndarray
    energy_kev: np.ndarray
    crpix: tuple[float, float]  # sky pixel of the tangent point
    crval: tuple[float, float]  # its RA, Dec [deg]
    pixel_deg: float  # sky pixel size [deg]
    exposure_s: float

    def wcs(self):
        """The sky pixels' WCS (gnomonic projection about the tangent point)."""
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.crval = self.crval
        w.wcs.crpix = self.crpix
        w.wcs.cdelt = [-self.pixel_deg, self.pixel_deg]
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        return w

    def sky_to_pixel(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """Sky pixel of an RA/Dec."""
        x, y = self.wcs().wcs_world2pix([[ra_deg, dec_deg]], 1)[0]
        return float(x), float(y)

    def pixel_to_sky(self, x: float, y: float) -> tuple[float, float]:
        """RA, Dec [deg] of a sky pixel."""
        ra, dec = self.wcs().wcs_pix2world([[x, y]], 1)[0]
        return float(ra), float(dec)


def read_events(path: str | Path) -> Events:
    """Read the EVENTS table of a FITS event file (SOXS's or Chandra's: X, Y, ENERGY in eV)."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        ev = hdul["EVENTS"]
        h = ev.header
        names = [n.upper() for n in ev.columns.names]
        ix, iy = names.index("X") + 1, names.index("Y") + 1
        if abs(abs(h[f"TCDLT{ix}"]) - abs(h[f"TCDLT{iy}"])) > 1e-12:
            raise ValueError(f"{path}: sky pixels are not square (TCDLT{ix}={h[f'TCDLT{ix}']}, "
                             f"TCDLT{iy}={h[f'TCDLT{iy}']})")
        return Events(
            x=np.asarray(ev.data["X"], dtype=np.float64),
            y=np.asarray(ev.data["Y"], dtype=np.float64),
            energy_kev=np.asarray(ev.data["ENERGY"], dtype=np.float64) / 1000.0,
            crpix=(float(h[f"TCRPX{ix}"]), float(h[f"TCRPX{iy}"])),
            crval=(float(h[f"TCRVL{ix}"]), float(h[f"TCRVL{iy}"])),
            pixel_deg=abs(float(h[f"TCDLT{ix}"])),
            exposure_s=float(h.get("EXPOSURE", 0.0)),
        )


def bin_image(x: np.ndarray, y: np.ndarray, energy_kev: np.ndarray, *, center: tuple[float, float],
              pixel_deg: float, fov_arcmin: float, pixels: int, bands) -> np.ndarray:
    """Counts image (bands, pixels, pixels) int32 of the events of each band inside the field; rows = y."""
    half = fov_arcmin / 60.0 / pixel_deg / 2.0  # half-width of the field in sky pixels
    field = [[center[1] - half, center[1] + half], [center[0] - half, center[0] + half]]
    out = np.empty((len(bands), pixels, pixels), dtype=np.int32)
    for b, (lo, hi) in enumerate(bands):
        keep = (energy_kev >= lo) & (energy_kev < hi)
        out[b] = np.histogram2d(y[keep], x[keep], bins=pixels, range=field)[0]
    return out


def image_from_events(events: Events, *, fov_arcmin: float, pixels: int, bands,
                      center_radec: tuple[float, float] | None = None) -> np.ndarray:
    center = events.crpix if center_radec is None else events.sky_to_pixel(*center_radec)
    return bin_image(events.x, events.y, events.energy_kev, center=center, pixel_deg=events.pixel_deg,
                     fov_arcmin=fov_arcmin, pixels=pixels, bands=bands)


def exposure_fraction(expmap: np.ndarray, full: float, map_pixel, *, fov_arcmin: float, pixels: int,
                      oversample: int = 4) -> np.ndarray:
    """(pixels, pixels) fraction of the exposure each image pixel was on the detector: the mean of an exposure map
    over ``oversample``² points of the pixel, nearest map pixel each, over ``full``, the map of a pixel on a chip
    all along (SOXS's normalised map: the effective area). ``map_pixel(dx, dy)``: the map's 0-based column and
    row of the points ``dx``, ``dy`` [deg] from the image's centre along the sky pixels' x and y
    (:func:`tangent_map_pixel`, :func:`wcs_map_pixel`)."""
    step = fov_arcmin / 60.0 / pixels / oversample
    offset = (np.arange(pixels * oversample) + 0.5) * step - fov_arcmin / 120.0  # [deg] from the centre
    dy, dx = np.meshgrid(offset, offset, indexing="ij")
    ix, iy = (np.rint(c).astype(np.int64) for c in map_pixel(dx, dy))
    inside = (ix >= 0) & (ix < expmap.shape[1]) & (iy >= 0) & (iy < expmap.shape[0])
    samples = np.zeros(ix.shape)
    samples[inside] = expmap[iy[inside], ix[inside]]
    # SOXS convolves the aspect histogram by FFT: round-off (~1e-12) off the chips, a few % of ringing at the
    # gaps' edges (it keeps the integral, so it is left in).
    samples[samples < ROUNDOFF * full] = 0.0
    return (samples.reshape(pixels, oversample, pixels, oversample).mean(axis=(1, 3)) / full).astype(np.float32)


def tangent_map_pixel(crpix: tuple[float, float], pixel_deg: float):
    """:func:`exposure_fraction`'s ``map_pixel`` for an image centred on the tangent point of a map whose pixels
    (``pixel_deg`` square, the sky pixels' orientation) put it at FITS pixel ``crpix`` (as the observe stage
    bins its mocks)."""
    return lambda dx, dy: (crpix[0] - 1.0 + dx / pixel_deg, crpix[1] - 1.0 + dy / pixel_deg)


def wcs_map_pixel(events: Events, center: tuple[float, float], map_wcs):
    """:func:`exposure_fraction`'s ``map_pixel`` for an image centred on the sky pixel ``center`` of ``events``, from
    the map's celestial WCS (``map_wcs``: any binning, tangent point or orientation, as CIAO's ``fluximage`` and
    SOXS's ``make_exposure_map`` write them)."""
    def map_pixel(dx, dy):
        ra, dec = events.wcs().wcs_pix2world(center[0] + dx / events.pixel_deg, center[1] + dy / events.pixel_deg, 1)
        return map_wcs.wcs_world2pix(ra, dec, 0)

    return map_pixel


def image_from_event_file(path: str | Path, *, fov_arcmin: float = 20.0, pixels: int = 128,
                          bands=((0.5, 7.0),), center_radec: tuple[float, float] | None = None) -> np.ndarray:
    """The training image of a FITS event file (defaults: the paper's 20' field, 128 pixels, 0.5-7 keV)."""
    return image_from_events(read_events(path), fov_arcmin=fov_arcmin, pixels=pixels, bands=bands,
                             center_radec=center_radec)
