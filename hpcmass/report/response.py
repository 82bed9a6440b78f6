"""The instrument files the observe stage used, read back for the L_X measurement.

The observe stage records its data files (``data_files``: SOXS data directory, ARF, RMF, particle
background PHA) and instrument (``instrument``) in its group's attributes; the same files, in
OGIP format, give the effective area for the counts-to-flux factor and the expected particle
background per pixel in the image band.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StageError


@dataclass(frozen=True)
class Response:
    arf: Path
    rmf: Path
    bkgnd: Path | None  # particle background PHA (count rate per bkgnd_area arcmin^2), None if off
    bkgnd_area_arcmin2: float
    foreground: bool  # a galactic foreground was added (not subtracted here)


def observe_response(observe_attrs: dict, approx_dir: Path) -> Response:
    """Locate the observe stage's files; an approximate-mode directory moved with its workdir is
    found again in ``approx_dir``."""
    try:
        files = json.loads(observe_attrs["data_files"])
        instrument = json.loads(observe_attrs["instrument"])
    except (KeyError, ValueError):
        raise StageError("the observe stage recorded no data_files/instrument attributes; "
                         "re-run `hpcmass observe` with this version of hpcmass") from None
    where = Path(files.get("staged_dir") or files["soxs_data_dir"])  # XrayData.response_dir
    if not (where / files["arf"]).is_file() and files.get("staged_dir") is None and files.get("mode") == "approximate":
        where = approx_dir
    bkgnd = instrument.get("bkgnd")
    resp = Response(where / files["arf"], where / files["rmf"], where / bkgnd[0] if bkgnd else None,
                    float(bkgnd[1]) if bkgnd else 1.0, bool(files.get("foreground", False)))
    for path in (resp.arf, resp.rmf, resp.bkgnd):
        if path is not None and not path.is_file():
            raise StageError(f"{path}: the observe stage's response file is missing; it is needed to turn counts "
                             f"into L_X and to name the instrument (run `hpcmass stage-data`, or re-run observe)")
    return resp


def telescope_instrument(rmf: Path) -> tuple[str, str]:
    """TELESCOP and INSTRUME of an OGIP RMF's matrix: what SOXS writes as TELESCOP into its event files,
    and the detector's name in real observations (INSTRUME of SOXS's files is the instrument's registry name)."""
    from astropy.io import fits

    with fits.open(rmf) as h:
        header = next(hdu.header for hdu in h if hdu.name in ("MATRIX", "SPECRESP MATRIX"))
    return str(header.get("TELESCOP", "")).strip(), str(header.get("INSTRUME", "")).strip()


def effective_area(arf: Path):
    """area(E_keV) [cm^2] interpolated from an OGIP ARF (SPECRESP)."""
    from astropy.io import fits

    with fits.open(arf) as h:
        t = h["SPECRESP"].data
        e = 0.5 * (np.asarray(t["ENERG_LO"], float) + np.asarray(t["ENERG_HI"], float))
        a = np.asarray(t["SPECRESP"], float)
    return lambda energy: np.interp(energy, e, a, left=0.0, right=0.0)


def background_rate(resp: Response, emin_kev: float, emax_kev: float) -> float:
    """Particle background in the band [counts s^-1 arcmin^-2]: the PHA's count rate summed over
    the channels whose EBOUNDS lie inside the band."""
    if resp.bkgnd is None:
        return 0.0
    from astropy.io import fits

    with fits.open(resp.rmf) as h:
        eb = h["EBOUNDS"].data
        chan, lo, hi = (np.asarray(eb[c]) for c in ("CHANNEL", "E_MIN", "E_MAX"))
    with fits.open(resp.bkgnd) as h:
        sp = h["SPECTRUM"].data
        rate = dict(zip(np.asarray(sp["CHANNEL"]).tolist(), np.asarray(sp["COUNT_RATE"], float).tolist()))
    band = (lo >= emin_kev - 1e-9) & (hi <= emax_kev + 1e-9)
    return float(sum(rate.get(int(c), 0.0) for c in chan[band])) / resp.bkgnd_area_arcmin2
