"""The TNG file layout, read and written by one set of functions for both sources.

An input directory (``catalog.tng_dir`` for TNG300, ``<workdir>/catalog`` for the synthetic
sample) holds, as illustris_python and the TNG web API lay them out::

    groups_099/fof_subhalo_tab_099.<chunk>.hdf5   Header attrs + Group/<Field> (the group catalogue)
    cutouts/halo_<FoF ID>.hdf5                    a FoF-halo gas cutout (Header + PartType0)

Cutouts are in TNG code units (Coordinates ckpc/h, Masses 1e10 Msun/h, Density (1e10 Msun/h) /
(ckpc/h)^3, InternalEnergy (km/s)^2, Velocities km/s sqrt(a)) and hold **box coordinates**, as
the TNG API serves them: a halo near a face of the periodic box has cells near 0 and near
BoxSize. The catalogue's centre is GroupPos (TNG: the most bound particle) wrapped into
[0, BoxSize); distances to it are taken with the minimum-image convention. yt opens these
files as Arepo with the box as its periodic domain, and pyXSIM re-joins a sphere or box region
that straddles the edge, so the observe stage can use the centre as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..constants import KEV_ERG, KPC_CM, M_P_G, MSUN_G
from ..errors import StageError
from . import physics as ph

#: Gas fields the observe stage needs (DESIGN.md "Offline X-ray path"); all must be present.
GAS_FIELDS = ("Coordinates", "Masses", "Density", "InternalEnergy", "ElectronAbundance", "GFM_Metallicity",
              "StarFormationRate", "Velocities")
#: Group catalogue fields the loader reads (the first three always; a mass per selection rule).
GROUP_FIELDS = ("Group_M_Crit500", "Group_R_Crit500", "GroupPos", "Group_M_Crit200", "GroupMass")
#: Halo selection rules and the group catalogue mass each one cuts on (1e10 Msun/h).
SELECTION_FIELDS = {"m500c": "Group_M_Crit500", "m200c": "Group_M_Crit200", "fof": "GroupMass"}
_SELECTION_NAMES = {"m500c": "M500c", "m200c": "M200c", "fof": "M_FoF (GroupMass)"}
#: TNG snapshot header unit constants (cgs); yt takes the code units from them.
UNIT_LENGTH_CM, UNIT_MASS_G, UNIT_VELOCITY_CM_S = KPC_CM, 1e10 * MSUN_G, 1e5
#: Observe-stage gas filter: kT > 0.1 keV and not star-forming (the paper's cut).
KT_MIN_KEV = 0.1
#: Slack on the mass-range selection for float32 catalogue values (dex).
_SELECT_TOL = 1e-6


class InputError(StageError):
    """An input file is missing, truncated or inconsistent; the message names file and problem."""


@dataclass(frozen=True)
class Selection:
    """The haloes whose ``rule`` mass [Msun] has log_min <= log10 M <= log_max."""

    rule: str
    log_min: float
    log_max: float = float("inf")

    def describe(self) -> str:
        name = _SELECTION_NAMES[self.rule]
        if np.isinf(self.log_max):
            return f"log10 {name} >= {self.log_min:g}"
        return f"{self.log_min:g} <= log10 {name} <= {self.log_max:g}"

    def mask(self, mass_code: np.ndarray, hubble: float) -> np.ndarray:
        log_m = np.log10(np.maximum(mass_code.astype(np.float64), 1e-30) * 1e10 / hubble)
        return (log_m >= self.log_min - _SELECT_TOL) & (log_m <= self.log_max + _SELECT_TOL)


@dataclass(frozen=True)
class Inputs:
    """The selected haloes of one input directory: group catalogue values in TNG code units."""

    tng_dir: Path
    snapshot: int
    box_size: float       # ckpc/h
    hubble: float
    omega_m: float
    omega_l: float
    redshift: float
    group_id: np.ndarray  # FoF IDs, ascending
    m500: np.ndarray      # Group_M_Crit500, 1e10 Msun/h
    r500: np.ndarray      # Group_R_Crit500, ckpc/h
    pos: np.ndarray       # GroupPos wrapped into [0, BoxSize), ckpc/h
    #: Haloes each candidate rule would select (Selection.describe() -> count; None: field not staged).
    counts: dict = field(default_factory=dict)

    @property
    def a(self) -> float:
        return 1.0 / (1.0 + self.redshift)

    @property
    def log_m500c(self) -> np.ndarray:
        return np.log10(self.m500.astype(np.float64) * 1e10 / self.hubble)

    @property
    def r500c_kpc(self) -> np.ndarray:
        return self.r500.astype(np.float64) * self.a / self.hubble

    def cutout(self, group_id: int) -> Path:
        return cutout_path(self.tng_dir, group_id)


def group_catalog_dir(tng_dir: str | Path, snapshot: int) -> Path:
    return Path(tng_dir) / f"groups_{snapshot:03d}"


def group_catalog_path(tng_dir: str | Path, snapshot: int, chunk: int = 0) -> Path:
    return group_catalog_dir(tng_dir, snapshot) / f"fof_subhalo_tab_{snapshot:03d}.{chunk}.hdf5"


def cutout_path(tng_dir: str | Path, group_id: int) -> Path:
    return Path(tng_dir) / "cutouts" / f"halo_{int(group_id)}.hdf5"


def wrap(x, box: float):
    """Coordinates into [0, box)."""
    return np.mod(x, box)


def min_image(dx, box: float):
    """Separations under the minimum-image convention of a periodic box."""
    return dx - box * np.round(dx / box)


# --- writing ---------------------------------------------------------------------------------


def write_hdf5_atomic(path: Path, fill) -> None:
    """Write ``path`` all or nothing: ``fill(f)`` fills the open file."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        fill(f)


def snapshot_header(*, n_gas: int, box_size: float, redshift: float = 0.0) -> dict:
    """Header attributes of a TNG300-1 snapshot file holding ``n_gas`` gas cells only."""
    npart = np.array([n_gas, 0, 0, 0, 0, 0], dtype=np.int64)
    return {
        "BoxSize": float(box_size), "Redshift": float(redshift), "Time": 1.0 / (1.0 + redshift),
        "HubbleParam": ph.HUBBLE, "Omega0": ph.OMEGA_M, "OmegaLambda": ph.OMEGA_L, "OmegaBaryon": ph.OMEGA_B,
        # TNG300-1 dark-matter particle mass (1e10 Msun/h); the cutouts carry gas only.
        "MassTable": np.array([0.0, 0.00398342749867548, 0.0, 0.0, 0.0, 0.0]),
        "NumPart_ThisFile": npart.astype(np.int32), "NumPart_Total": npart.astype(np.uint32),
        "NumPart_Total_HighWord": np.zeros(6, dtype=np.uint32), "NumFilesPerSnapshot": 1,
        "Flag_Cooling": 1, "Flag_DoublePrecision": 1, "Flag_Feedback": 1, "Flag_Metals": 10, "Flag_Sfr": 1,
        "Flag_StellarAge": 1, "UnitLength_in_cm": UNIT_LENGTH_CM, "UnitMass_in_g": UNIT_MASS_G,
        "UnitVelocity_in_cm_per_s": UNIT_VELOCITY_CM_S,
    }


def _write_tng_file(path: Path, header: dict, group: str, fields: dict[str, np.ndarray],
                    empty_groups: tuple[str, ...] = ()) -> None:
    def fill(f):
        h = f.create_group("Header")
        for k, v in header.items():
            h.attrs[k] = v
        g = f.create_group(group)
        for name, data in fields.items():
            g.create_dataset(name, data=data, track_times=False)
        for name in empty_groups:
            f.create_group(name)
    write_hdf5_atomic(path, fill)


def write_cutout(path: Path, header: dict, gas: dict[str, np.ndarray]) -> None:
    """A FoF-halo cutout as the TNG API serves it: ``Header`` attributes and ``PartType0`` datasets."""
    _write_tng_file(path, header, "PartType0", gas)


def write_group_catalog(path: Path, header: dict, groups: dict[str, np.ndarray]) -> None:
    """One chunk of a TNG group catalogue (``Header``, ``Group/<Field>``, empty ``Subhalo``)."""
    _write_tng_file(path, header, "Group", groups, empty_groups=("Subhalo",))


def group_catalog_header(*, n_groups: int, box_size: float, hubble: float, omega_m: float, omega_l: float,
                         redshift: float) -> dict:
    return {
        "BoxSize": float(box_size), "HubbleParam": float(hubble), "Omega0": float(omega_m),
        "OmegaLambda": float(omega_l), "Redshift": float(redshift), "Time": 1.0 / (1.0 + redshift),
        "Ngroups_ThisFile": int(n_groups), "Ngroups_Total": int(n_groups), "Nsubgroups_ThisFile": 0,
        "Nsubgroups_Total": 0, "NumFiles": 1, "FlagDoubleprecision": 0,
    }


# --- reading ---------------------------------------------------------------------------------


def _chunks(tng_dir: Path, snapshot: int) -> list[Path]:
    d = group_catalog_dir(tng_dir, snapshot)
    pattern = re.compile(rf"fof_subhalo_tab_{snapshot:03d}\.(\d+)\.hdf5$")
    found = sorted(((int(m.group(1)), p) for p in d.glob("*.hdf5") if (m := pattern.match(p.name))))
    return [p for _, p in found]


def open_inputs(tng_dir: str | Path, snapshot: int, selection: Selection, candidates=()) -> Inputs:
    """Read the group catalogue (all chunks) and select the haloes of ``selection``.

    Also counts the haloes each of ``candidates`` would select (where its mass field is staged), so
    that a user can see which rule gives the sample size they expect.
    """
    tng_dir = Path(tng_dir)
    if not tng_dir.is_dir():
        raise InputError(f"catalog.tng_dir {tng_dir}: no such directory; stage the TNG300 data there with "
                         f"`hpcmass fetch-tng` on a machine with network access")
    chunks = _chunks(tng_dir, snapshot)
    if not chunks:
        raise InputError(f"{group_catalog_dir(tng_dir, snapshot)}: no group catalogue "
                         f"(fof_subhalo_tab_{snapshot:03d}.*.hdf5); run `hpcmass fetch-tng` first")
    required = {"Group_M_Crit500", "Group_R_Crit500", "GroupPos", SELECTION_FIELDS[selection.rule]}
    fields: dict[str, list[np.ndarray]] = {k: [] for k in GROUP_FIELDS}
    header = None
    for path in chunks:
        try:
            with h5py.File(path, "r") as f:
                if header is None:
                    header = _require_attrs(path, f, "Header", ("BoxSize", "HubbleParam", "Omega0", "OmegaLambda",
                                                               "Redshift"))
                n = int(f["Header"].attrs.get("Ngroups_ThisFile", -1))
                if n == 0:
                    continue  # TNG chunks without groups have no Group datasets
                for k in GROUP_FIELDS:
                    if f"Group/{k}" in f:
                        fields[k].append(f[f"Group/{k}"][...])
                    elif k in required:
                        raise InputError(f"{path}: group catalogue field Group/{k} is missing; re-run "
                                         f"`hpcmass fetch-tng` (it stages every field the selection rules use)")
        except OSError as e:
            raise InputError(f"{path}: cannot read the group catalogue ({_first_line(e)}); truncated download? "
                             f"delete it and re-run `hpcmass fetch-tng`") from None
    cat = {k: np.concatenate(v) if v else np.empty((0, 3) if k == "GroupPos" else 0) for k, v in fields.items()}
    n_groups = len(cat["Group_M_Crit500"])
    box, h = float(header["BoxSize"]), float(header["HubbleParam"])
    counts = {c.describe(): int(c.mask(cat[SELECTION_FIELDS[c.rule]], h).sum())
              if len(cat[SELECTION_FIELDS[c.rule]]) == n_groups else None for c in candidates}
    sel = np.flatnonzero(selection.mask(cat[SELECTION_FIELDS[selection.rule]], h))
    return Inputs(tng_dir=tng_dir, snapshot=snapshot, box_size=box, hubble=h, omega_m=float(header["Omega0"]),
                  omega_l=float(header["OmegaLambda"]), redshift=max(float(header["Redshift"]), 0.0),
                  group_id=sel.astype(np.int64), m500=cat["Group_M_Crit500"][sel],
                  r500=cat["Group_R_Crit500"][sel], pos=wrap(cat["GroupPos"][sel].astype(np.float64), box),
                  counts=counts)


def sample_size_mismatch(inputs: Inputs, selection: Selection, n_clusters: int) -> str | None:
    """The one-line complaint when ``selection`` does not give ``n_clusters`` haloes (None if it does)."""
    n = len(inputs.group_id)
    if n == n_clusters:
        return None
    return (f"{inputs.tng_dir} holds {n} haloes with {selection.describe()}, the params say catalog.n_clusters="
            f"{n_clusters}; set catalog.n_clusters={n}, or the rule that gives your sample (catalog.selection, "
            f"catalog.selection_log_min): {describe_counts(inputs.counts)}")


def describe_counts(counts: dict) -> str:
    """'741 haloes with 13.57 <= log10 M500c <= 15.06; 290 with ...' for logs and errors."""
    parts = [f"{'not staged' if n is None else n} {'haloes ' if i == 0 else ''}with {rule}"
             for i, (rule, n) in enumerate(counts.items())]
    return "; ".join(parts)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _require_attrs(path, f, group: str, names) -> dict:
    if group not in f:
        raise InputError(f"{path}: no /{group} group; not a TNG file")
    attrs = f[group].attrs
    missing = [n for n in names if n not in attrs]
    if missing:
        raise InputError(f"{path}: /{group} lacks attribute(s) {', '.join(missing)}")
    return {n: attrs[n] for n in names}


def read_gas(path: Path, fields=GAS_FIELDS) -> tuple[dict, dict[str, np.ndarray]]:
    """Header attributes and PartType0 fields of a cutout; InputError naming what is wrong."""
    if not path.exists():
        raise InputError(f"{path}: cutout missing")
    try:
        with h5py.File(path, "r") as f:
            _require_attrs(path, f, "Header", ("HubbleParam",))
            header = dict(f["Header"].attrs)
            if "PartType0" not in f:
                raise InputError(f"{path}: no PartType0 (no gas cells)")
            g = f["PartType0"]
            missing = [k for k in fields if k not in g]
            if missing:
                raise InputError(f"{path}: PartType0 lacks {', '.join(missing)}")
            gas = {k: g[k][...] for k in fields}
    except OSError as e:
        raise InputError(f"{path}: cannot read ({_first_line(e)}); truncated or not HDF5") from None
    n = {len(v) for v in gas.values()}
    if len(n) != 1:
        raise InputError(f"{path}: PartType0 fields have different lengths {sorted(n)}")
    npart = header.get("NumPart_ThisFile")
    if npart is not None and int(npart[0]) != n.pop():
        raise InputError(f"{path}: Header NumPart_ThisFile[0]={int(npart[0])} but PartType0 holds "
                         f"{len(gas['Masses'])} cells; truncated?")
    return header, gas


# --- measuring a cluster on its cells ----------------------------------------------------------


def gas_state(gas: dict[str, np.ndarray], hubble: float, a: float) -> dict[str, np.ndarray]:
    """Physical per-cell quantities: mass [Msun], density [Msun/kpc^3], kT [keV], n_e, n_H [cm^-3]."""
    xe = gas["ElectronAbundance"].astype(np.float64)
    mass = gas["Masses"].astype(np.float64) * 1e10 / hubble
    rho = gas["Density"].astype(np.float64) * 1e10 * hubble**2 / a**3
    u = gas["InternalEnergy"].astype(np.float64) * 1e10  # (cm/s)^2
    kt = (ph.GAMMA - 1.0) * u * ph.mu_mass(xe) * M_P_G / KEV_ERG
    nh = ph.n_h(rho)
    return {"mass": mass, "rho": rho, "kt": kt, "nh": nh, "ne": xe * nh,
            "hot": (kt > KT_MIN_KEV) & (gas["StarFormationRate"] == 0)}


def measure_cluster(path: Path, inputs: Inputs, i: int) -> dict:
    """The catalogue row of selected halo ``i``, measured on its cutout's cells.

    Spherical 3D apertures about GroupPos (minimum image); hot gas = kT > 0.1 keV and SFR = 0.
    Raises InputError for a missing/truncated file, missing fields, or values that say wrong
    units or a halo without hot gas.
    """
    gid = int(inputs.group_id[i])
    header, gas = read_gas(path)
    if abs(float(header["HubbleParam"]) - inputs.hubble) > 1e-4:
        raise InputError(f"{path}: HubbleParam {float(header['HubbleParam'])} differs from the group catalogue's "
                         f"{inputs.hubble}")
    box, h, a = inputs.box_size, inputs.hubble, inputs.a
    x = gas["Coordinates"].astype(np.float64)
    if x.size and (x.min() < -1e-3 * box or x.max() > 1.001 * box):
        raise InputError(f"{path}: Coordinates span [{x.min():.4g}, {x.max():.4g}], outside the box "
                         f"[0, {box:g}] ckpc/h; wrong units?")
    r = np.linalg.norm(min_image(x - inputs.pos[i], box), axis=1) * a / h
    s = gas_state(gas, h, a)
    r500 = float(inputs.r500c_kpc[i])
    m500 = 10.0 ** float(inputs.log_m500c[i])
    in500 = r <= r500
    mgas500 = float(s["mass"][in500].sum())
    if not 0.005 <= mgas500 / m500 <= 0.5:
        raise InputError(f"{path}: gas within R500 of GroupPos is {mgas500 / m500:.3g} of M500c (halo {gid}); "
                         f"mis-centred, or Masses/Coordinates not in TNG units")
    hot = s["hot"]
    if not (hot & in500).any():
        raise InputError(f"{path}: no hot gas (kT > {KT_MIN_KEV} keV, SFR = 0) within R500 (halo {gid})")
    # Hot gas within R500 sits at ~0.2-1 of mu m_p G M500 / R500 (about 2 keV at 10^13.6 Msun).
    kt_vir = ph.mu_mass(ph.XE_IONISED) * M_P_G * ph.G_KPC * m500 / r500 * 1e10 / KEV_ERG
    kt_med = float(np.median(s["kt"][hot & in500]))
    if not 0.03 <= kt_med / kt_vir <= 5.0:
        raise InputError(f"{path}: median hot-gas kT within R500 is {kt_med:.3g} keV, {kt_med / kt_vir:.3g} x the "
                         f"virial {kt_vir:.3g} keV (halo {gid}); InternalEnergy not in (km/s)^2?")
    vol = s["mass"] / s["rho"] * KPC_CM**3
    lum = ph.band_emissivity(s["ne"], s["nh"], s["kt"]) * vol
    ce = hot & (r >= ph.CORE_EXCISED[0] * r500) & (r <= ph.CORE_EXCISED[1] * r500)
    core = hot & (r <= ph.K0_RADIUS * r500)
    w = ph.spectroscopic_weight(s["rho"], s["mass"] / s["rho"], s["kt"])
    k0 = float(np.sum(s["mass"][core] * ph.entropy(s["kt"][core], s["ne"][core])) / s["mass"][core].sum()) \
        if core.any() else np.nan
    return {
        "n_gas_cells": len(x),
        "n_hot_cells": int(hot.sum()),
        "mgas500_msun": mgas500,
        "lx_ce_erg_s": float(lum[ce].sum()),
        "lx_ci_erg_s": float(lum[hot & in500].sum()),
        "tx_kev": float(np.sum(w[ce] * s["kt"][ce]) / w[ce].sum()) if ce.any() else np.nan,
        "k0_kev_cm2": k0,
        "cool_core": int(k0 < ph.K0_COOL_CORE),
    }
