"""Which X-ray data the observe stage uses, and SOXS set up to use them offline.

Two data modes, recorded in every output:

- ``soxs``: SOXS's own files (APEC tables, the ACIS-I Cycle-22 aimpoint ARF/RMF and particle
  background -- Cycle 22 is the one SOXS serves closest to the paper's Cycle 19), staged
  beforehand with ``hpcmass stage-data`` into ``observe.data_dir`` and checked against SOXS's
  sha256 registry. SOXS then never touches the network.
- ``approximate``: the suite's own labelled approximations (:mod:`hpcmass.observe.approx`),
  generated once per workdir and fed through exactly the same pyXSIM/SOXS calls.

``observe.data: auto`` takes ``soxs`` when the files are staged, ``approximate`` otherwise.

Two kinds of instrument (``observe.instrument``): ``simple_acisi``, the paper's simplified ACIS-I
(square field without chip gaps, Gaussian PSF; or ACIS-I's chips and gaps, ``observe.chips``) with
the data mode's ACIS-I response, or an imager
of SOXS's registry (ACIS-I with its chips and PSF, AXIS, Lynx, Athena WFI, XRISM Xtend, ...), whose
response, background and PSF files must be staged whichever the data mode.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import StageError
from ..params import SIMPLE_ACISI
from . import approx

#: APEC version of SOXS's default tables, and the ACIS-I cycle SOXS serves closest to the paper's 19.
SOXS_APEC_VERSION = "3.1.3"
SOXS_CYCLE = 22
SOXS_ARF = f"acisi_aimpt_cy{SOXS_CYCLE}.arf"
SOXS_RMF = f"acisi_aimpt_cy{SOXS_CYCLE}.rmf"
SOXS_BKGND = f"chandra_acisi_cy{SOXS_CYCLE}_particle_bkgnd.pha"
TBABS_TABLE = "tbabs_table.h5"
#: SOXS's registry instrument whose chips, gaps and aimpoint ``observe.chips: acisi`` takes (the
#: layout only; the response stays the data mode's, so no file needs staging).
ACISI_GEOMETRY = f"chandra_acisi_cy{SOXS_CYCLE}"
#: SOXS's default sky position for examples; where the pointing sits does not matter here.
SKY_CENTER_DEG = (30.0, 45.0)
_FOCAL_LENGTH_M = 10.0  # Chandra HRMA


def table_files(observe) -> list[str]:
    """The SOXS registry files a ``soxs``-mode run reads: the APEC tables (and tbabs), and for the simple
    ACIS-I its Cycle-22 response and particle background."""
    files = [f"apec_v{SOXS_APEC_VERSION}_coco.fits", f"apec_v{SOXS_APEC_VERSION}_line.fits"]
    if observe.instrument == SIMPLE_ACISI:
        files += [SOXS_ARF, SOXS_RMF, SOXS_BKGND]
    return files + ([TBABS_TABLE] if observe.absorb_model == "tbabs" else [])


def instrument_files(spec: dict, particle_background: bool) -> list[str]:
    """The files a SOXS registry instrument reads: ARF, RMF, particle background (when on), PSF model."""
    files = [spec["arf"], spec["rmf"]]
    if particle_background and spec.get("bkgnd"):
        files.append(spec["bkgnd"][0])
    psf = spec.get("psf") or []
    if len(psf) > 1 and isinstance(psf[1], str):  # gaussian PSFs have a width there, the others a file
        files.append(psf[1])
    return list(dict.fromkeys(files))


def soxs_registry() -> dict[str, str]:
    """SOXS's own file -> sha256 registry (read from the installed package, without importing soxs)."""
    import importlib.util

    spec = importlib.util.find_spec("soxs")
    return json.loads((Path(spec.origin).parent / "file_hash_registry.json").read_text())


def missing_soxs_files(data_dir: Path, names: list[str]) -> list[str]:
    """Of ``names``, those absent from ``data_dir`` or whose sha256 differs from SOXS's registry."""
    import pooch

    registry = soxs_registry()
    return [name for name in names if not (data_dir / name).is_file()
            or (name in registry and pooch.file_hash(str(data_dir / name)) != registry[name].split(":")[-1])]


def registry_instrument(name: str, data_dir: Path, config_home: Path) -> dict:
    """SOXS's specification of the registry instrument ``name``; StageError (one line) if it is not an
    imager this suite can use. Imports soxs, its downloader pointed at ``data_dir``."""
    soxs = _import(data_dir, config_home)

    def why_not(spec) -> str | None:
        if spec is None:
            return f"not in SOXS {soxs.__version__}'s registry"
        if not spec["imaging"]:
            return "a grating spectrometer, not an imager"
        if spec.get("bkgnd") and not isinstance(spec["bkgnd"][0], str):
            return "its particle background differs from chip to chip, and the L_X baseline reads one spectrum"
        return None

    spec = soxs.instrument_registry.get(name)
    if why_not(spec):
        usable = [k for k, v in soxs.instrument_registry.items() if not why_not(v)]
        raise StageError(f"observe.instrument={name}: {why_not(spec)}; expected {SIMPLE_ACISI} (the paper's simplified "
                         f"ACIS-I) or one of {', '.join(usable)}")
    return json.loads(json.dumps(dict(spec)))  # a plain copy (tuples as lists, as the store records it)


@dataclass(frozen=True)
class XrayData:
    """The files one run uses, resolved once (rank 0) and shared by every rank."""

    mode: str  # thermal tables: "soxs" (AtomDB APEC) or "approximate"
    soxs_data_dir: str  # where SOXS looks up files outside its registry (ours) and the APEC tables
    staged_dir: str | None  # observe.data_dir when SOXS's registry files are read (its downloader's directory)
    apec_version: str
    arf: str
    rmf: str
    bkgnd: str | None  # particle background PHA (None: the instrument has none)
    foreground: bool  # galactic foreground applied
    absorb_model: str
    soxs_instrument: dict | None = field(default=None, compare=False)  # a SOXS registry instrument's spec

    @property
    def response_dir(self) -> str:
        """Where the ARF, RMF and background are: the staged SOXS files, else our approximate ones."""
        return self.staged_dir or self.soxs_data_dir

    def describe(self) -> str:
        if self.mode == "soxs":
            tables = f"soxs: SOXS's APEC v{self.apec_version} tables from {self.soxs_data_dir}"
        else:
            tables = ("approximate: hpcmass's offline APPROXIMATIONS of the thermal table (APEC format, free-free "
                      f"+ recombination continuum and K-shell lines, version {approx.APPROX_VERSION})")
        if self.soxs_instrument is not None:
            instrument = f"SOXS's {self.soxs_instrument['name']} (ARF {self.arf}, RMF {self.rmf}) from {self.staged_dir}"
        elif self.mode == "soxs":
            instrument = f"simplified ACIS-I with the Cycle {SOXS_CYCLE} aimpoint ARF/RMF and particle background"
        else:
            instrument = ("simplified ACIS-I with APPROXIMATE Cycle-19-like ARF/RMF and SOXS's ACIS-I particle "
                          "background spectrum")
        return f"{tables}; instrument: {instrument}"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "soxs_instrument"}


def resolve_data(observe, approx_dir: Path, config_home: Path) -> XrayData:
    """Pick the data mode and instrument for ``observe`` params. Raises StageError (one line) when files it
    needs are not staged. A SOXS registry instrument imports soxs (config in ``config_home``)."""
    data_dir = Path(observe.data_dir).resolve()
    spec = None
    if observe.instrument != SIMPLE_ACISI:
        spec = registry_instrument(observe.instrument, data_dir, config_home)
        sky_arcsec = spec["fov"] * 60.0 / spec["num_pixels"]
        image_arcsec = observe.fov_arcmin * 60.0 / observe.image_pixels
        if sky_arcsec > image_arcsec * (1 + 1e-9):
            raise StageError(f"observe.instrument={observe.instrument}: its {sky_arcsec:.4g}\" pixels are coarser than "
                             f"the image's {image_arcsec:.4g}\" (observe.fov_arcmin / observe.image_pixels); "
                             f"use fewer image_pixels or another instrument")
        missing = missing_soxs_files(data_dir, instrument_files(spec, observe.particle_background))
        if missing:
            raise StageError(
                f"observe.instrument={observe.instrument} needs SOXS's files {', '.join(missing)} in "
                f"observe.data_dir={observe.data_dir} (missing or failing SOXS's hash check); run `hpcmass stage-data` "
                f"with these params on a machine with network access, and copy {data_dir} here if that is another one"
            )
    missing = missing_soxs_files(data_dir, table_files(observe))
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
    real = observe.data == "soxs" or (observe.data == "auto" and not missing)
    if spec is not None:
        if not observe.particle_background:  # recorded as off, as the simple ACIS-I records it (the L_X baseline reads it)
            spec["bkgnd"] = None
        files = (spec["arf"], spec["rmf"], spec["bkgnd"][0] if spec["bkgnd"] else None)
    else:
        files = (SOXS_ARF, SOXS_RMF, SOXS_BKGND) if real else (approx.ARF_NAME, approx.RMF_NAME, approx.BKGND_NAME)
    return XrayData("soxs" if real else "approximate", str(data_dir) if real else str(Path(approx_dir).resolve()),
                    str(data_dir) if real or spec is not None else None,
                    SOXS_APEC_VERSION if real else approx.APEC_VERSION, *files,
                    foreground=real and observe.foreground is not False, absorb_model=observe.absorb_model,
                    soxs_instrument=spec)


def detector_geometry(observe) -> dict:
    """simple_acisi's detector: one square chip filling the image field (the paper), or ACIS-I's four
    chips, gaps and aimpoint as SOXS's registry lays them out (``observe.chips``)."""
    if observe.chips == "acisi":
        import soxs

        acisi = soxs.instrument_registry[ACISI_GEOMETRY]
        return json.loads(json.dumps({k: acisi[k] for k in ("fov", "num_pixels", "aimpt_coords", "chips")}))
    n = round(observe.fov_arcmin * 60.0 / observe.detector_pixel_arcsec)
    return {"fov": observe.fov_arcmin, "num_pixels": n, "aimpt_coords": [0.0, 0.0], "chips": [["Box", 0, 0, n, n]]}


def instrument_spec(observe, data: XrayData) -> dict:
    """The SOXS instrument: the registry's, or the simple ACIS-I -- the detector of
    :func:`detector_geometry`, Gaussian PSF."""
    if data.soxs_instrument is not None:
        return data.soxs_instrument
    spec = {
        "arf": data.arf,
        "rmf": data.rmf,
        "bkgnd": [data.bkgnd, 1.0] if observe.particle_background else None,
        **detector_geometry(observe),
        "focal_length": _FOCAL_LENGTH_M,
        "dither": observe.dither,
        "psf": ["gaussian", observe.psf_fwhm_arcsec],
        "imaging": True,
        "grating": False,
    }
    # SOXS refuses to register a name twice: name the instrument after its contents.
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return {"name": f"hpcmass_acisi_{data.mode}_{digest}", **spec}


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


def _import(fetch_dir: Path, config_home: Path):
    """Import soxs (once in a process), its downloader's directory ``fetch_dir`` and its config file in
    ``config_home``; returns the module."""
    if "soxs" not in sys.modules:
        cfg = configparser.ConfigParser()
        cfg["soxs"] = {"soxs_data_dir": str(fetch_dir)}
        path = config_home / "soxs" / "soxs.cfg"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            cfg.write(fh)
        with temporary_environ(XDG_CONFIG_HOME=str(config_home), SOXS_DATA_DIR=str(fetch_dir)):
            import soxs  # noqa: F401  (configured at import)
    return sys.modules["soxs"]


def import_soxs(data: XrayData, config_home: Path):
    """Import (once) and configure SOXS for ``data``; returns the module.

    SOXS's hash-checked downloader fixes its directory at import, so the staged files' directory
    is given then; a process that imported SOXS elsewhere before is refused when it needs them.
    """
    soxs = _import(Path(data.staged_dir or data.soxs_data_dir), config_home)
    fetch_dir = Path(soxs.utils.finley.pooch_obj.abspath)
    if data.staged_dir is not None and fetch_dir != Path(data.staged_dir):
        raise StageError(f"soxs was imported in this process before hpcmass could point it at "
                         f"{data.staged_dir} (it uses {fetch_dir}); run the observe stage in a fresh process")
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
