"""The suite's own offline approximations of the data SOXS would download, in SOXS's file formats.

Used when the real files (``hpcmass stage-data``) are not there. Everything here is clearly an
approximation and is labelled as one in each file's header and in every image's provenance:

- **Thermal plasma table** in the APEC file format (``apec_v<V>_coco.fits`` + ``_line.fits``),
  emissivities per n_e n_H with every element at its Anders & Grevesse (angr) solar abundance,
  as SOXS/pyXSIM expect, so the metallicity scales the metal part exactly as with AtomDB:
  * continuum: free-free of every element with the thermally averaged Born-approximation
    Gaunt factor, plus hydrogenic (Kramers) radiative-recombination continua onto the ground
    shells of the H-, He- and Li-like ions;
  * lines: the K-shell lines that dominate hot-cluster spectra (H-like Ly-alpha and the He-like
    K-alpha triplet of O, Ne, Mg, Si, S, Ar, Ca, Fe), excited with the van Regemorter rate;
  * ion fractions of the bare, H-, He- and Li-like (lumped with lower) stages from a coronal
    balance of Lotz collisional ionisation and hydrogenically scaled radiative recombination
    (Verner & Ferland 1996 fit for H). No dielectronic recombination and no L-shell (Fe-L)
    lines: below ~2 keV the approximation is too faint compared with AtomDB.
- **ACIS-I-like response**: an OGIP ARF following the Cycle-19 aimpoint effective area the paper
  used (values read off the CXC files that SOXS served, see FACTS.md section 9) and an OGIP RMF
  with 1024 PI channels of 14.6 eV and Gaussian redistribution fitted to that RMF's FWHM.
- **Particle background**: SOXS's own ACIS-I particle background model (shipped inside the soxs
  wheel, counts/s/keV/arcmin^2) integrated over the approximate RMF's channels as a PHA file.

The files are deterministic (no random numbers): :func:`write_approx_files` writes them once
into a directory, and :func:`approx_files_current` says whether a directory already holds this
version of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..constants import H_ERG_S, HC_KEV_ANGSTROM, K_PER_KEV, KEV_ERG, RYDBERG_KEV

#: Bump when anything below changes what the files contain.
APPROX_VERSION = "2"
#: The approximation's share of real AtomDB 3.0.9 APEC counts in 0.5-1.2 keV, by kT [keV], at Z = 0.3 through
#: this module's response: measured by benchmarks/approx_vs_apec.py on 2026-12-04 (no Fe-L lines).
SOFT_BAND_SHARE_OF_APEC = {1.0: 0.29, 2.0: 0.65, 3.0: 0.79, 5.0: 0.89}
#: APEC "version" string of the approximate table: file names apec_v<this>_{coco,line}.fits.
APEC_VERSION = f"hpcmass-approx{APPROX_VERSION}"
ARF_NAME = "hpcmass_acisi_approx.arf"
RMF_NAME = "hpcmass_acisi_approx.rmf"
BKGND_NAME = "hpcmass_acisi_approx_particle_bkgnd.pha"
_STAMP = "hpcmass-approx.json"
_LABEL = "hpcmass offline APPROXIMATION (not AtomDB/CALDB); see hpcmass.observe.approx"

# Table grids.
_KT_GRID = np.geomspace(0.08, 86.17, 41)  # keV, 0.075 dex steps; covers the kT > 0.1 keV cut and kT_max=64
_E_CONT = np.geomspace(0.05, 60.0, 1200)  # keV, continuum sampling (0.6% steps, below ACIS resolution)

# K-shell lines: element Z -> (H-like Ly-alpha, He-like w) energies in keV.
_K_LINES = {
    8: (0.6536, 0.5740),
    10: (1.0218, 0.9220),
    12: (1.4723, 1.3523),
    14: (2.0056, 1.8650),
    16: (2.6227, 2.4606),
    18: (3.3230, 3.1398),
    20: (4.1075, 3.9024),
    26: (6.9660, 6.7004),
}
_F_LYA = 0.4162  # absorption oscillator strength of 1s-2p (sum of both fine-structure lines)
_F_HE_W = 0.70  # 1s^2 1S - 1s2p 1P for mid-Z He-like ions
_HE_TRIPLET = 1.8  # (w + x + y + z) / w at low density: the unresolved K-alpha complex
_LOTZ_A = 4.5e-14  # cm^2 eV^2


# --- atomic approximations -----------------------------------------------------------------------


def _elements() -> list[int]:
    """Elements SOXS sums in an APEC table (H, He and the metals it scales with Zmet)."""
    from soxs.constants import cosmic_elem, metal_elem

    return sorted(set(cosmic_elem) | set(metal_elem))


def _ionisation_potentials(z: int) -> dict[str, float]:
    """keV, by iso-electronic stage, from screened hydrogenic formulas (within ~2% of NIST)."""
    pots = {"H": RYDBERG_KEV * z * z}
    if z >= 2:
        pots["He"] = RYDBERG_KEV * (z - 0.6) ** 2
    if z >= 3:
        pots["Li"] = RYDBERG_KEV * (z - 1.7) ** 2 / 4.0
    return pots


def _lotz_rate(chi_kev: float, q: int, kt_kev: np.ndarray) -> np.ndarray:
    """Collisional ionisation rate coefficient [cm^3/s]: Lotz cross-section, Maxwell averaged."""
    from scipy.special import exp1

    chi, kt = chi_kev * 1e3, kt_kev * 1e3  # eV
    return 6.69e7 * _LOTZ_A * q * exp1(chi / kt) / (chi * np.sqrt(kt))


def _rr_rate(charge: int, kt_kev: np.ndarray) -> np.ndarray:
    """Radiative recombination onto an ion of this charge [cm^3/s]: H fit scaled hydrogenically."""
    a, b, t0, t1 = 7.982e-11, 0.7480, 3.148, 7.036e5  # Verner & Ferland (1996), H I
    t = kt_kev * K_PER_KEV / charge**2
    x0, x1 = np.sqrt(t / t0), np.sqrt(t / t1)
    return charge * a / (x0 * (1 + x0) ** (1 - b) * (1 + x1) ** (1 + b))


def ion_fractions(z: int, kt_kev: np.ndarray) -> dict[str, np.ndarray]:
    """Coronal-equilibrium fractions of the bare, H-like, He-like and Li-like (and lower) stages."""
    pots = _ionisation_potentials(z)
    chain = [s for s in ("Li", "He", "H") if s in pots]  # increasing ionisation
    shells = {"Li": 1, "He": 2, "H": 1}  # electrons in the shell being ionised
    log_n = [np.zeros_like(kt_kev)]
    for k, stage in enumerate(chain):
        charge_after = z - len(chain) + k + 1  # charge of the ion this stage ionises into
        ratio = _lotz_rate(pots[stage], shells[stage], kt_kev) / _rr_rate(charge_after, kt_kev)
        log_n.append(log_n[-1] + np.log(np.maximum(ratio, 1e-300)))
    log_n = np.array(log_n)
    n = np.exp(log_n - log_n.max(axis=0))
    n /= n.sum(axis=0)
    return dict(zip([*chain, "bare"], n, strict=True))


def _gaunt_ff(e_kev: np.ndarray, kt_kev: float) -> np.ndarray:
    """Thermally averaged non-relativistic Born free-free Gaunt factor."""
    from scipy.special import k0e

    u = np.asarray(e_kev) / kt_kev
    return np.sqrt(3.0) / np.pi * k0e(u / 2.0)


#: photons cm^3 s^-1 keV^-1 per (Z^2 n_e n_i T^-1/2 e^(-E/kT) g / E[keV]): Rybicki & Lightman 5.14b.
_C_FF = 6.8e-38 * (KEV_ERG / H_ERG_S) / KEV_ERG


def continuum(z: int, abundance: float, kt_kev: float, e_kev: np.ndarray, frac: dict[str, float]) -> np.ndarray:
    """Continuum emissivity of one element [ph cm^3 s^-1 keV^-1 per n_e n_H]."""
    t_k = kt_kev * K_PER_KEV
    boltz = np.exp(-e_kev / kt_kev) / (np.sqrt(t_k) * e_kev)
    pots = _ionisation_potentials(z)
    # Free-free: each stage with its ionic charge (bare Z, H-like Z-1, ...).
    charges = {"bare": z, "H": z - 1, "He": z - 2, "Li": z - 3}
    z2 = sum(frac[s] * charges[s] ** 2 for s in frac)
    spec = _C_FF * abundance * z2 * boltz * _gaunt_ff(e_kev, kt_kev)
    # Recombination continua (Kramers, g_fb = 1): j_fb/j_ff = (2 chi / (n kT)) e^(chi/kT) above the edge,
    # times the fraction of the shell that is empty. (recombining stage, stage formed, n, vacancy fraction)
    for src, dst, n_shell, vacancy in (("bare", "H", 1, 1.0), ("H", "He", 1, 0.5), ("He", "Li", 2, 1.0)):
        if src in frac and dst in pots:
            chi = pots[dst]
            above = e_kev >= chi
            ratio = 2.0 * chi / (n_shell * kt_kev) * np.exp(np.minimum(chi / kt_kev, 700.0)) * vacancy
            spec = spec + np.where(above, _C_FF * abundance * frac[src] * charges[src] ** 2 * boltz * ratio, 0.0)
    return spec


def _collision_rate(f_osc: float, de_kev: float, kt_kev: np.ndarray) -> np.ndarray:
    """van Regemorter excitation rate coefficient [cm^3/s] with the ion Gaunt factor max(0.2, P(y))."""
    from scipy.special import exp1

    y = de_kev / kt_kev
    gbar = np.maximum(0.2, 0.276 * np.exp(y) * exp1(y))
    t_k = kt_kev * K_PER_KEV
    return 1.252e-4 * f_osc * gbar * (RYDBERG_KEV / de_kev) * np.exp(-y) / np.sqrt(t_k)


def lines(z: int, abundance: float, kt_kev: float, frac: dict[str, float]) -> list[tuple[float, float]]:
    """(energy keV, emissivity ph cm^3 s^-1 per n_e n_H) of this element's modelled K lines."""
    if z not in _K_LINES:
        return []
    e_lya, e_w = _K_LINES[z]
    kt = np.array([kt_kev])
    return [
        (e_lya, float(abundance * frac["H"] * _collision_rate(_F_LYA, e_lya, kt)[0])),
        (e_w, float(abundance * frac["He"] * _HE_TRIPLET * _collision_rate(_F_HE_W, e_w, kt)[0])),
    ]


# --- file writers --------------------------------------------------------------------------------


def _params_hdu(kt: np.ndarray):
    from astropy.io import fits

    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="kT", format="E", unit="keV", array=kt),
        fits.Column(name="EDensity", format="E", unit="cm**-3", array=np.ones_like(kt)),
        fits.Column(name="Temperature", format="E", unit="K", array=kt * K_PER_KEV),
    ])
    hdu.name = "PARAMETERS"
    return hdu


def write_apec_tables(directory: Path) -> tuple[Path, Path]:
    """Write ``apec_v{APEC_VERSION}_coco.fits`` and ``_line.fits`` (the format SOXS's CIE generator reads)."""
    from astropy.io import fits
    from soxs.constants import abund_tables

    angr = abund_tables["angr"]
    elements = _elements()
    n_e = _E_CONT.size
    coco_hdus, line_hdus = [], []
    for kt in _KT_GRID:
        rows = {k: [] for k in ("Z", "cont", "lines_e", "lines_eps", "lines_el")}
        for z in elements:
            frac = {k: float(v[0]) for k, v in ion_fractions(z, np.array([kt])).items()}
            rows["Z"].append(z)
            rows["cont"].append(continuum(z, angr[z], kt, _E_CONT, frac))
            for e, eps in lines(z, angr[z], kt, frac):
                rows["lines_e"].append(e)
                rows["lines_eps"].append(eps)
                rows["lines_el"].append(z)
        nz = len(elements)
        coco = fits.BinTableHDU.from_columns([
            fits.Column(name="Z", format="J", array=np.array(rows["Z"])),
            fits.Column(name="rmJ", format="J", array=np.zeros(nz, dtype=int)),
            fits.Column(name="N_Cont", format="J", array=np.full(nz, n_e)),
            fits.Column(name="E_Cont", format=f"{n_e}E", unit="keV", array=np.tile(_E_CONT, (nz, 1))),
            fits.Column(name="Continuum", format=f"{n_e}E", unit="photons cm^3 s^-1 keV^-1",
                        array=np.array(rows["cont"])),
            fits.Column(name="N_Pseudo", format="J", array=np.full(nz, 2)),
            fits.Column(name="E_Pseudo", format="2E", unit="keV", array=np.tile([_E_CONT[0], _E_CONT[-1]], (nz, 1))),
            fits.Column(name="Pseudo", format="2E", unit="photons cm^3 s^-1 keV^-1", array=np.zeros((nz, 2))),
        ])
        coco.header["TEMPERAT"] = kt * K_PER_KEV
        coco_hdus.append(coco)
        energies = np.array(rows["lines_e"])
        line = fits.BinTableHDU.from_columns([
            fits.Column(name="Lambda", format="E", unit="A", array=HC_KEV_ANGSTROM / energies),
            fits.Column(name="Epsilon", format="E", unit="photons cm^3 s^-1", array=np.array(rows["lines_eps"])),
            fits.Column(name="Element", format="J", array=np.array(rows["lines_el"])),
            fits.Column(name="Ion", format="J", array=np.zeros(energies.size, dtype=int)),
        ])
        line.header["TEMPERAT"] = kt * K_PER_KEV
        line_hdus.append(line)
    paths = []
    for kind, hdus in (("coco", coco_hdus), ("line", line_hdus)):
        primary = fits.PrimaryHDU()
        primary.header["ORIGIN"] = "hpcmass"
        primary.header["HPCMASS"] = (_LABEL, "what made this file")
        primary.header["APXVERS"] = APPROX_VERSION
        primary.header["ABUNDTAB"] = ("angr", "each element at its solar abundance")
        path = directory / f"apec_v{APEC_VERSION}_{kind}.fits"
        _write_atomic(fits.HDUList([primary, _params_hdu(_KT_GRID), *hdus]), path)
        paths.append(path)
    return paths[0], paths[1]


def _energy_grid() -> tuple[np.ndarray, np.ndarray]:
    edges = np.round(np.arange(0.10, 12.0 + 1e-9, 0.01), 6)
    return edges[:-1], edges[1:]


#: Cycle-19 ACIS-I aimpoint effective area (keV, cm^2): FACTS.md section 9 plus the 1.83 keV peak and
#: the high-energy fall-off; interpolated in log(area).
_ARF_KNOTS = np.array([
    (0.10, 0.05), (0.30, 1.0), (0.50, 4.0), (0.70, 4.8), (1.00, 111.0), (1.50, 382.0), (1.83, 431.0),
    (2.00, 333.0), (3.00, 322.0), (5.00, 329.0), (6.00, 219.0), (7.00, 118.0), (8.00, 60.0),
    (10.0, 12.0), (12.0, 3.0),
])
_N_CHANNELS = 1024
_CHANNEL_KEV = 0.0146


def effective_area(e_kev: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(e_kev, _ARF_KNOTS[:, 0], np.log(_ARF_KNOTS[:, 1])))


def fwhm_kev(e_kev: np.ndarray) -> np.ndarray:
    """Gaussian FWHM fitted to the Cycle-19 RMF: 113 eV at 1 keV, 131 at 1.5, 263 at 6 (FACTS.md)."""
    return 1e-3 * np.sqrt(1489.0 + 11280.0 * np.asarray(e_kev))


def _ogip_header(hdu, hduclas1: str, hduclas2: str) -> None:
    hdu.header["TELESCOP"] = "CHANDRA"
    hdu.header["INSTRUME"] = "ACIS"
    hdu.header["FILTER"] = "NONE"
    hdu.header["HDUCLASS"] = "OGIP"
    hdu.header["HDUCLAS1"] = hduclas1
    hdu.header["HDUCLAS2"] = hduclas2
    hdu.header["HPCMASS"] = (_LABEL, "what made this file")


def write_arf(path: Path) -> None:
    from astropy.io import fits

    lo, hi = _energy_grid()
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="ENERG_LO", format="E", unit="keV", array=lo),
        fits.Column(name="ENERG_HI", format="E", unit="keV", array=hi),
        fits.Column(name="SPECRESP", format="E", unit="cm**2", array=effective_area(0.5 * (lo + hi))),
    ])
    hdu.name = "SPECRESP"
    _ogip_header(hdu, "RESPONSE", "SPECRESP")
    hdu.header["HDUVERS"] = "1.1.0"
    _write_atomic(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


def channel_edges() -> tuple[np.ndarray, np.ndarray]:
    ch = np.arange(_N_CHANNELS)
    return ch * _CHANNEL_KEV, (ch + 1) * _CHANNEL_KEV


def write_rmf(path: Path) -> None:
    from astropy.io import fits
    from scipy.special import ndtr

    lo, hi = _energy_grid()
    e_mid = 0.5 * (lo + hi)
    c_lo, c_hi = channel_edges()
    sigma = fwhm_kev(e_mid) / 2.3548200450309493
    # One channel group per energy: the channels within 5 sigma (what is beyond is < 6e-7).
    first = np.clip(np.floor((e_mid - 5 * sigma) / _CHANNEL_KEV).astype(int), 0, _N_CHANNELS - 1)
    last = np.clip(np.floor((e_mid + 5 * sigma) / _CHANNEL_KEV).astype(int), 0, _N_CHANNELS - 1)
    rows = [(ndtr((c_hi[a:b + 1] - e) / s) - ndtr((c_lo[a:b + 1] - e) / s)).astype(np.float32)
            for a, b, e, s in zip(first, last, e_mid, sigma, strict=True)]
    n = lo.size
    mat = fits.BinTableHDU.from_columns([
        fits.Column(name="ENERG_LO", format="E", unit="keV", array=lo),
        fits.Column(name="ENERG_HI", format="E", unit="keV", array=hi),
        fits.Column(name="N_GRP", format="I", array=np.ones(n, dtype=np.int16)),
        fits.Column(name="F_CHAN", format="1J", array=(first + 1).astype(np.int32)),
        fits.Column(name="N_CHAN", format="1J", array=(last - first + 1).astype(np.int32)),
        fits.Column(name="MATRIX", format="PE()", array=np.array(rows, dtype=object)),
    ])
    mat.name = "MATRIX"
    _ogip_header(mat, "RESPONSE", "RSP_MATRIX")
    mat.header["HDUVERS"] = "1.3.0"
    mat.header["CHANTYPE"] = "PI"
    mat.header["DETCHANS"] = _N_CHANNELS
    mat.header["LO_THRES"] = 0.0
    mat.header["TLMIN4"] = 1
    mat.header["TLMAX4"] = _N_CHANNELS
    ebounds = fits.BinTableHDU.from_columns([
        fits.Column(name="CHANNEL", format="J", array=np.arange(1, _N_CHANNELS + 1, dtype=np.int32)),
        fits.Column(name="E_MIN", format="E", unit="keV", array=c_lo),
        fits.Column(name="E_MAX", format="E", unit="keV", array=c_hi),
    ])
    ebounds.name = "EBOUNDS"
    _ogip_header(ebounds, "RESPONSE", "EBOUNDS")
    ebounds.header["CHANTYPE"] = "PI"
    ebounds.header["DETCHANS"] = _N_CHANNELS
    _write_atomic(fits.HDUList([fits.PrimaryHDU(), mat, ebounds]), path)


def particle_background_rate() -> np.ndarray:
    """SOXS's ACIS-I particle background per approximate channel [counts s^-1 arcmin^-2]."""
    import importlib.util

    import h5py

    path = Path(importlib.util.find_spec("soxs").origin).parent / "files" / "acisi_particle_bkgnd.h5"
    with h5py.File(path, "r") as f:
        spec = f["spectrum"][()]  # counts s^-1 keV^-1 arcmin^-2 on a linear grid
        edges = np.linspace(f["emin"][()], f["emax"][()], spec.size + 1)
    cumulative = np.concatenate([[0.0], np.cumsum(spec * np.diff(edges))])
    c_lo, c_hi = channel_edges()
    return np.interp(c_hi, edges, cumulative) - np.interp(c_lo, edges, cumulative)


def write_particle_background(path: Path) -> None:
    """An OGIP PHA count-rate spectrum normalised to 1 arcmin^2 (SOXS's ``bkgnd: [file, 1.0]``)."""
    from astropy.io import fits

    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="CHANNEL", format="J", array=np.arange(1, _N_CHANNELS + 1, dtype=np.int32)),
        fits.Column(name="COUNT_RATE", format="E", unit="counts/s", array=particle_background_rate()),
    ])
    hdu.name = "SPECTRUM"
    _ogip_header(hdu, "SPECTRUM", "BKG")
    hdu.header["HDUCLAS3"] = "RATE"
    hdu.header["CHANTYPE"] = "PI"
    hdu.header["DETCHANS"] = _N_CHANNELS
    hdu.header["EXPOSURE"] = 1.0
    hdu.header["AREASCAL"] = 1.0
    hdu.header["BACKSCAL"] = 1.0
    hdu.header["POISSERR"] = True
    _write_atomic(fits.HDUList([fits.PrimaryHDU(), hdu]), path)


def _write_atomic(hdul, path: Path) -> None:
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True)


def approx_files_current(directory: str | Path) -> bool:
    stamp = Path(directory) / _STAMP
    try:
        return json.loads(stamp.read_text()).get("version") == APPROX_VERSION
    except (OSError, ValueError):
        return False


def write_approx_files(directory: str | Path) -> Path:
    """Write every approximation file into ``directory`` (the stamp last, so a half-written set is redone).

    Reads SOXS's element tables, so it imports soxs: call :func:`hpcmass.observe.xray.import_soxs`
    first where SOXS must not write its configuration into $HOME.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_apec_tables(directory)
    write_arf(directory / ARF_NAME)
    write_rmf(directory / RMF_NAME)
    write_particle_background(directory / BKGND_NAME)
    (directory / _STAMP).write_text(json.dumps({"version": APPROX_VERSION, "label": _LABEL}))
    return directory
