"""Which X-ray data the observe stage uses, and SOXS set up to use them offline.

Two data modes, recorded in every output:

- ``soxs``: SOXS's own files (APEC tables, the ACIS-I Cycle-22 aimpoint ARF/RMF and particle
  background -- Cycle 22 is the one SOXS serves closest to the paper's Cycle 19), staged
  beforehand with ``hpcmass stage-data`` into ``observe.data_dir`` and checked against SOXS's
  sha256 registry. SOXS then never touches the network.
- ``approximate``: the suite's own labelled approximations (:mod:`hpcmass.observe.approx`),
  generated once per workdir and fed through exactly the same pyXSIM/SOXS calls.

``observe.data: auto`` takes ``soxs`` when the files are staged, ``approximate`` otherwise.

SOXS reads its configuration and decides where its hash-checked files live when it is first
imported, and writes ``$XDG_CONFIG_HOME/soxs/soxs.cfg`` then; :func:`import_soxs` imports it
with a private config directory (one per rank, so no two processes write one file) holding the
data directory, so nothing lands in ``$HOME``.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StageError
from . import approx

#: APEC version of SOXS's default tables, and the ACIS-I cycle SOXS serves closest to the paper's 19.
SOXS_APEC_VERSION = "3.1.3"
SOXS_CYCLE = 22
SOXS_ARF = f"acisi_aimpt_cy{SOXS_CYCLE}.arf"
SOXS_RMF = f"acisi_aimpt_cy{SOXS_CYCLE}.rmf"
SOXS_BKGND = f"chandra_acisi_cy{SOXS_CYCLE}_particle_bkgnd.pha"
TBABS_TABLE = "tbabs_table.h5"
#: SOXS's default sky position for examples; where the pointing sits does not matter here.
SKY_CENTER_DEG = (30.0, 45.0)
_FOCAL_LENGTH_M = 10.0  # Chandra HRMA


def soxs_files(absorb_model: str) -> list[str]:
    """The SOXS registry files a ``soxs``-mode run reads."""
    files = [f"apec_v{SOXS_APEC_VERSION}_coco.fits", f"apec_v{SOXS_APEC_VERSION}_line.fits",
             SOXS_ARF, SOXS_RMF, SOXS_BKGND]
    return files + ([TBABS_TABLE] if absorb_model == "tbabs" else [])


def soxs_registry() -> dict[str, str]:
    """SOXS's own file -> sha256 registry (read from the installed package, without importing soxs)."""
    import importlib.util

    spec = importlib.util.find_spec("soxs")
    return json.loads((Path(spec.origin).parent / "file_hash_registry.json").read_text())


def missing_soxs_files(data_dir: Path, absorb_model: str) -> list[str]:
    """Files absent from ``data_dir`` or whose sha256 differs from SOXS's registry."""
    import pooch

    registry = soxs_registry()
    bad = []
    for name in soxs_files(absorb_model):
        path = data_dir / name
        if not path.is_file() or pooch.file_hash(str(path)) != registry[name].split(":")[-1]:
            bad.append(name)
    return bad


@dataclass(frozen=True)
class XrayData:
    """The files one run uses, resolved once (rank 0) and shared by every rank."""

    mode: str  # "soxs" or "approximate"
    soxs_data_dir: str  # where SOXS looks up its files (hash-checked registry ones and our own)
    apec_version: str
    arf: str
    rmf: str
    bkgnd: str
    foreground: bool  # galactic foreground applied
    absorb_model: str

    def describe(self) -> str:
        if self.mode == "soxs":
            return (f"soxs: SOXS data files (APEC v{self.apec_version}, ACIS-I Cycle {SOXS_CYCLE} aimpoint "
                    f"ARF/RMF, particle background) from {self.soxs_data_dir}")
        return ("approximate: hpcmass's offline APPROXIMATIONS (APEC-format table with free-free + "
                "recombination continuum and K-shell lines, ACIS-I-like Cycle-19 ARF/RMF, SOXS's ACIS-I "
                f"particle background spectrum), version {approx.APPROX_VERSION}")

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_data(observe, approx_dir: Path) -> XrayData:
    """Pick the data mode for ``observe`` params. Raises StageError if real data are demanded but absent."""
    data_dir = Path(observe.data_dir).resolve()
    missing = missing_soxs_files(data_dir, observe.absorb_model)
    needs_real = [why for why, needed in (
        ("observe.data=soxs", observe.data == "soxs"),
        ("observe.foreground=true", observe.foreground is True),
        ("observe.absorb_model=tbabs", observe.absorb_model == "tbabs"),
    ) if needed]
    if missing and needs_real:
        raise StageError(
            f"{', '.join(needs_real)} needs SOXS's data files in observe.data_dir={observe.data_dir}, and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing or fail SOXS's hash check; "
            f"run `hpcmass stage-data` with these params on a machine with network access, or change "
            f"{'that setting' if len(needs_real) == 1 else 'those settings'}"
        )
    if observe.data == "soxs" or (observe.data == "auto" and not missing):
        return XrayData("soxs", str(data_dir), SOXS_APEC_VERSION, SOXS_ARF, SOXS_RMF, SOXS_BKGND,
                        foreground=observe.foreground is not False, absorb_model=observe.absorb_model)
    return XrayData("approximate", str(Path(approx_dir).resolve()), approx.APEC_VERSION, approx.ARF_NAME,
                    approx.RMF_NAME, approx.BKGND_NAME, foreground=False, absorb_model=observe.absorb_model)


def instrument_spec(observe, data: XrayData) -> dict:
    """The SOXS instrument: an ACIS-I-like square field without chip gaps, Gaussian PSF."""
    n = round(observe.fov_arcmin * 60.0 / observe.detector_pixel_arcsec)
    spec = {
        "arf": data.arf,
        "rmf": data.rmf,
        "bkgnd": [data.bkgnd, 1.0] if observe.particle_background else None,
        "fov": observe.fov_arcmin,
        "num_pixels": n,
        "aimpt_coords": [0.0, 0.0],
        "chips": [["Box", 0, 0, n, n]],
        "focal_length": _FOCAL_LENGTH_M,
        "dither": observe.dither,
        "psf": ["gaussian", observe.psf_fwhm_arcsec],
        "imaging": True,
        "grating": False,
    }
    # SOXS refuses to register a name twice: name the instrument after its contents.
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return {"name": f"hpcmass_acisi_{data.mode}_{digest}", **spec}


def _write_soxs_config(config_home: Path, data: XrayData) -> None:
    cfg = configparser.ConfigParser()
    cfg["soxs"] = {"soxs_data_dir": data.soxs_data_dir}
    path = config_home / "soxs" / "soxs.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        cfg.write(fh)


@contextlib.contextmanager
def temporary_environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def import_soxs(data: XrayData, config_home: Path):
    """Import (once) and configure SOXS for ``data``; returns the module.

    SOXS's hash-checked downloader fixes its directory at import, so the real files' directory
    is given then; a process that already imported SOXS elsewhere is refused for ``soxs`` mode.
    """
    if "soxs" not in sys.modules:
        _write_soxs_config(config_home, data)
        with temporary_environ(XDG_CONFIG_HOME=str(config_home), SOXS_DATA_DIR=data.soxs_data_dir):
            import soxs  # noqa: F401
    import soxs
    import soxs.utils

    fetch_dir = Path(soxs.utils.finley.pooch_obj.abspath)
    if data.mode == "soxs" and fetch_dir != Path(data.soxs_data_dir):
        raise StageError(f"soxs was imported in this process before hpcmass could point it at "
                         f"{data.soxs_data_dir} (it uses {fetch_dir}); run the observe stage in a fresh process")
    # Set every option a result depends on, so a user's or a cwd soxs.cfg cannot change it.
    for key, value in {
        "soxs_data_dir": data.soxs_data_dir,
        "abund_table": "angr",
        "apec_vers": data.apec_version,
        "bkgnd_nH": 0.018,
        "bkgnd_absorb_model": data.absorb_model,
        "frgnd_spec_model": "two_comp",  # SOXS's foreground model of the paper's time
        "frgnd_velocity": 0.0,
        "frgnd_abund": 1.0,
    }.items():
        soxs.set_soxs_config(key, value)
    return soxs


def register_instrument(observe, data: XrayData) -> str:
    """Register the instrument with SOXS (idempotent); returns its registry name."""
    import soxs

    spec = instrument_spec(observe, data)
    if spec["name"] not in soxs.instrument_registry:
        soxs.add_instrument_to_registry(dict(spec))
    return spec["name"]


def arf_peak_area(data: XrayData) -> float:
    """The instrument's peak effective area [cm^2]: the least photon-collecting area pyXSIM may use."""
    import soxs

    return float(soxs.AuxiliaryResponseFile(data.arf).max_area)
