"""Tiny controlled gas cutouts for the observe tests, in the TNG/Arepo HDF5 layout yt reads (DESIGN.md).

An isothermal beta-model cluster sampled with cells whose number density follows the gas density
(as Arepo's mass-refined cells do), plus variants whose gas is all cold or all star-forming.
Not the catalog stage's generator: just enough physics to check the observe stage.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HUBBLE, OMEGA_M, BOX = 0.6774, 0.3089, 205_000.0  # TNG300: h, Omega_m, box [ckpc/h]
_MP, _KB_KEV = 1.67262192e-24, 1.0 / 1.160452e7  # g; keV per K
_MU = 4.0 / (1.0 + 3 * 0.76 + 4 * 0.76 * 1.157)


def internal_energy(kt_kev: float) -> float:
    """Specific internal energy [(km/s)^2] of fully ionised gas at kT (TNG's mu recipe)."""
    return kt_kev * 1.602176634e-9 / ((5.0 / 3.0 - 1.0) * _MU * _MP) / 1e10


def write_cutout(path: Path, *, kind: str = "relaxed", n_cells: int = 20_000, seed: int = 0,
                 center=(1000.0, 2000.0, 3000.0), kt_kev: float = 4.0, m_gas_msun: float = 1.5e13,
                 rc_kpc: float = 80.0, beta: float = 2.0 / 3.0, r_max_kpc: float = 1500.0) -> None:
    """kind: relaxed (hot beta model), cold (kT = 0.05 keV), starforming (hot but SFR > 0)."""
    rng = np.random.default_rng(seed)
    # Radii distributed like the gas mass of a beta model: m(<r) by inverse CDF on a grid.
    r = np.linspace(0.0, r_max_kpc, 20_001)
    rho = (1.0 + (r / rc_kpc) ** 2) ** (-1.5 * beta)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] * r[1:] ** 2 + rho[:-1] * r[:-1] ** 2) * np.diff(r))])
    cdf /= cdf[-1]
    radius = np.interp(rng.uniform(size=n_cells), cdf, r)
    direction = rng.normal(size=(n_cells, 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    pos_kpc = radius[:, None] * direction
    # Density from the profile, normalised to the total gas mass [Msun/kpc^3].
    shell = 4 * np.pi * np.trapezoid(rho * r**2, r)
    rho_kpc = m_gas_msun / shell * (1.0 + (radius / rc_kpc) ** 2) ** (-1.5 * beta)
    m_cell = np.full(n_cells, m_gas_msun / n_cells)
    kt = 0.05 if kind == "cold" else kt_kev
    sfr = np.full(n_cells, 0.5 if kind == "starforming" else 0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        h = f.create_group("Header")
        h.attrs.update({"BoxSize": BOX, "Time": 1.0, "Redshift": 0.0, "HubbleParam": HUBBLE, "Omega0": OMEGA_M,
                        "OmegaLambda": 1 - OMEGA_M, "MassTable": np.zeros(6), "NumFilesPerSnapshot": 1,
                        "NumPart_ThisFile": np.array([n_cells, 0, 0, 0, 0, 0], dtype=np.int32),
                        "NumPart_Total": np.array([n_cells, 0, 0, 0, 0, 0], dtype=np.uint32),
                        "NumPart_Total_HighWord": np.zeros(6, dtype=np.uint32)})
        f.create_group("Config").attrs["VORONOI"] = 1
        g = f.create_group("PartType0")
        g["Coordinates"] = (pos_kpc * HUBBLE + np.asarray(center)) % BOX  # ckpc/h at a=1
        g["Masses"] = (m_cell * HUBBLE / 1e10).astype(np.float32)
        g["Density"] = (rho_kpc / 1e10 / HUBBLE**2).astype(np.float32)
        g["InternalEnergy"] = np.full(n_cells, internal_energy(kt), dtype=np.float32)
        g["ElectronAbundance"] = np.full(n_cells, 1.157, dtype=np.float32)
        g["GFM_Metallicity"] = np.full(n_cells, 0.3 * 0.0127, dtype=np.float32)
        g["StarFormationRate"] = sfr.astype(np.float32)
        g["Velocities"] = np.zeros((n_cells, 3), dtype=np.float32)
        g["ParticleIDs"] = np.arange(1, n_cells + 1, dtype=np.uint64)
