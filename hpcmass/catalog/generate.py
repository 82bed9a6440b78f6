"""Synthetic clusters as TNG data: gas cells of one cluster, and the sample's group catalogue.

Cells are equal-mass like Arepo's (target ``cell_mass``), placed by inverse-CDF sampling of
the gas mass profile in ellipsoidal radius, then stretched to the cluster's triaxial shape and
rotated; each cell carries the model's density, temperature and metallicity at its place.
The smooth population gives a cluster that would need more than ``max_cells`` cells
proportionally heavier cells (bounding the biggest clusters' cost, but a mass tell: TNG's cell
mass is one for all); the realistic one keeps one cell mass and refuses such a sample up front
(:func:`check_one_cell_mass`). It also moves the atmosphere by the gas peak offset and gives each
atmosphere cell its isobaric log-normal density fluctuation (physics.fluctuation_mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import K_B_ERG_K, KEV_ERG, KPC_CM, M_P_G, MSUN_G
from ..errors import ParamsError
from ..seeding import rng
from . import physics as ph
from . import tng

#: Star-forming cells: placed within this radius (R500), star formation timescale at threshold
#: (Springel & Hernquist 2003), log10 n_H range [cm^-3] and log10 effective temperature [K]
#: (TNG's effective EOS puts many above 0.1 keV: only the SFR = 0 cut removes those).
SF_RADIUS = 0.02
SF_T0_YR = 2.2e9
SF_LOG_NH = (np.log10(ph.N_H_SF), 0.5)
SF_LOG_T = (4.0, 7.3)


@dataclass(frozen=True)
class Resolution:
    cell_mass: float   # target gas cell mass, Msun
    max_cells: int     # per cluster; heavier cells beyond
    r_max: float       # cutout radius, R500 (ellipsoidal)


@dataclass(frozen=True)
class CellPlan:
    cell_mass: float         # Msun, after the max_cells cap
    n_smooth: int
    n_clump: tuple[int, ...]
    n_sf: int

    @property
    def total(self) -> int:
        return self.n_smooth + sum(self.n_clump) + self.n_sf


def smooth_gas_within(prof: ph.Profiles, r) -> float:
    return float(np.interp(np.log(r), np.log(prof.r), prof.m_gas))


def cell_plan(m: ph.ClusterModel, prof: ph.Profiles, res: Resolution) -> CellPlan:
    """How many cells of which mass: a pure function of the model, so costs are known up front."""
    smooth = smooth_gas_within(prof, res.r_max * m.r500)
    total = smooth + float(m.clump_mass.sum()) + m.sf_mass
    cell = res.cell_mass if m.generator == "realistic" else max(res.cell_mass, total / res.max_cells)
    return CellPlan(cell_mass=cell, n_smooth=max(1, round(smooth / cell)),
                    n_clump=tuple(max(1, round(float(c) / cell)) for c in m.clump_mass),
                    n_sf=max(3, round(m.sf_mass / cell)))


def check_one_cell_mass(models: list[ph.ClusterModel], plans: list[CellPlan], res: Resolution) -> None:
    """Refuse a realistic sample whose biggest cluster needs more than ``max_cells`` cells.

    Raises ParamsError naming the cluster and the two settings that fix it.
    """
    worst = max(range(len(plans)), key=lambda i: plans[i].total, default=None)
    if worst is None or models[worst].generator != "realistic" or plans[worst].total <= res.max_cells:
        return
    need = res.cell_mass * plans[worst].total / res.max_cells
    raise ParamsError(f"synthetic cluster {models[worst].index} (log10 M500c {models[worst].log_m500c:.2f}) needs "
                      f"{plans[worst].total:,} gas cells of catalog.cell_mass_msun={res.cell_mass:.3g}, more than "
                      f"catalog.max_gas_cells={res.max_cells:,}; the realistic generator keeps one cell mass for "
                      f"all clusters: set catalog.cell_mass_msun >= {need:.3g} or catalog.max_gas_cells >= "
                      f"{plans[worst].total:,}")


def _isotropic(g, n):
    v = g.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sigma_turb(kt, xe, f_nt):
    """1D turbulent velocity [km/s] carrying the non-thermal pressure share f_nt."""
    return np.sqrt(f_nt / (1.0 - f_nt) * kt * KEV_ERG / (ph.mu_mass(xe) * M_P_G)) / 1e5


def sample_cells(m: ph.ClusterModel, prof: ph.Profiles, res: Resolution, seed: int) -> dict[str, np.ndarray]:
    """Physical cell arrays (offsets kpc, mass Msun, rho Msun/kpc^3, kT keV, Z solar, xe, sfr, v km/s)."""
    plan = cell_plan(m, prof, res)
    g = rng(seed, "catalog", m.index, "cells")
    parts = []

    # Smooth atmosphere: radius from the mass profile, shape from the ellipsoid.
    smooth = smooth_gas_within(prof, res.r_max * m.r500)
    n = plan.n_smooth
    r = np.exp(np.interp(g.uniform(size=n) * smooth, prof.m_gas, np.log(prof.r)))
    pos = (r[:, None] * _isotropic(g, n) * np.asarray(m.axes)) @ m.rotation.T + m.gas_offset
    kt = prof.at("kt", r)
    xe = np.full(n, ph.XE_IONISED)
    v = g.normal(size=(n, 3)) * _sigma_turb(kt, xe, m.f_nt)[:, None]
    rho = prof.at("rho", r)
    if m.generator == "realistic":
        # Isobaric log-normal fluctuations from their own stream (the smooth draws stay as they were).
        sigma = ph.ln_rho_sigma_at(m, r)
        f = np.exp(sigma * rng(seed, "catalog", m.index, "cells", "fluctuations").normal(size=n) + 0.5 * sigma**2)
        rho, kt = rho * f, kt / f
    parts.append(dict(pos=pos, mass=np.full(n, smooth / n), rho=rho, kt=kt, z=np.interp(r, prof.r, prof.z), xe=xe,
                      sfr=np.zeros(n), v=v))

    # Infalling groups: truncated beta = 2/3 spheres, own temperature, falling in at v_circ.
    for j, nc in enumerate(plan.n_clump):
        y_t = m.clump_rt[j] / m.clump_rc[j]
        y = np.linspace(0.0, y_t, 257)
        s = m.clump_rc[j] * np.interp(g.uniform(size=nc) * (y_t - np.arctan(y_t)), y - np.arctan(y), y)
        d = np.linalg.norm(m.clump_offset[j])
        v_in = np.sqrt(ph.G_KPC * float(ph.nfw_mass(m, d)) / d)
        kt = np.full(nc, m.clump_kt[j])
        xe = np.full(nc, ph.XE_IONISED)
        pos = m.clump_offset[j] + s[:, None] * _isotropic(g, nc)
        turb = g.normal(size=(nc, 3)) * _sigma_turb(kt, xe, m.f_nt)[:, None]
        parts.append(dict(pos=pos, mass=np.full(nc, m.clump_mass[j] / nc),
                          rho=ph.clump_central_density(m)[j] / (1.0 + (s / m.clump_rc[j]) ** 2), kt=kt,
                          z=np.full(nc, m.z_out), xe=xe, sfr=np.zeros(nc), v=-v_in * m.clump_offset[j] / d + turb))

    # Star-forming cells on the effective EOS at the centre.
    n = plan.n_sf
    r = SF_RADIUS * m.r500 * np.cbrt(g.uniform(size=n))
    nh = 10.0 ** g.uniform(*SF_LOG_NH, size=n)
    mass = np.full(n, plan.cell_mass)
    parts.append(dict(pos=r[:, None] * _isotropic(g, n), mass=mass,
                      rho=nh * M_P_G / ph.X_H / MSUN_G * KPC_CM**3,
                      kt=10.0 ** g.uniform(*SF_LOG_T, size=n) * K_B_ERG_K / KEV_ERG, z=g.uniform(0.8, 1.2, size=n),
                      xe=g.uniform(0.3, ph.XE_IONISED, size=n), sfr=mass / (SF_T0_YR * np.sqrt(ph.N_H_SF / nh)),
                      v=g.normal(0.0, 50.0, size=(n, 3))))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def to_tng(m: ph.ClusterModel, cells: dict[str, np.ndarray], box: float) -> dict[str, np.ndarray]:
    """PartType0 datasets in TNG code units and dtypes (z = 0: a = 1)."""
    h = ph.HUBBLE
    n = len(cells["mass"])
    u = cells["kt"] * KEV_ERG / ((ph.GAMMA - 1.0) * ph.mu_mass(cells["xe"]) * M_P_G) / 1e10
    return {
        "Coordinates": tng.wrap(m.center_ckpch + cells["pos"] * h, box),
        "Density": (cells["rho"] / (1e10 * h**2)).astype(np.float32),
        "ElectronAbundance": cells["xe"].astype(np.float32),
        "GFM_Metallicity": (cells["z"] * ph.Z_SUN).astype(np.float32),
        "InternalEnergy": u.astype(np.float32),
        "Masses": (cells["mass"] * h / 1e10).astype(np.float32),
        "ParticleIDs": (np.uint64(m.index) << np.uint64(32)) + np.arange(1, n + 1, dtype=np.uint64),
        "StarFormationRate": cells["sfr"].astype(np.float32),
        "Velocities": cells["v"].astype(np.float32),
    }


def write_synthetic_cutout(path, m: ph.ClusterModel, res: Resolution, seed: int, box: float) -> int:
    """Generate cluster ``m``'s cells and write its cutout atomically; returns the cell count."""
    gas = to_tng(m, sample_cells(m, ph.profiles(m), res, seed), box)
    n = len(gas["Masses"])
    header = tng.snapshot_header(n_gas=n, box_size=box)
    header.update(CutoutID=m.index, CutoutType="halo", CutoutRequest="gas=" + ",".join(tng.GAS_FIELDS))
    tng.write_cutout(path, header, gas)
    return n


def write_synthetic_group_catalog(tng_dir, models: list[ph.ClusterModel], res: Resolution, box: float) -> None:
    """The sample's group catalogue in the TNG layout: FoF ID k = synthetic cluster k."""
    h = ph.HUBBLE
    n_cells = [cell_plan(m, ph.profiles(m), res).total for m in models]
    groups = {
        "GroupFirstSub": np.full(len(models), -1, dtype=np.int32),
        "GroupLen": np.array(n_cells, dtype=np.int32),
        "GroupLenType": np.array([[c, 0, 0, 0, 0, 0] for c in n_cells], dtype=np.int32).reshape(-1, 6),
        "GroupMass": np.array([ph.nfw_mass(m, res.r_max * m.r500) * h / 1e10 for m in models], dtype=np.float32),
        "GroupNsubs": np.zeros(len(models), dtype=np.int32),
        "GroupPos": np.array([m.center_ckpch for m in models], dtype=np.float32).reshape(-1, 3),
        "Group_M_Crit200": np.array([ph.m200c(m) * h / 1e10 for m in models], dtype=np.float32),
        "Group_M_Crit500": np.array([m.m500 * h / 1e10 for m in models], dtype=np.float32),
        "Group_R_Crit500": np.array([m.r500 * h for m in models], dtype=np.float32),
    }
    header = tng.group_catalog_header(n_groups=len(models), box_size=box, hubble=h, omega_m=ph.OMEGA_M,
                                      omega_l=ph.OMEGA_L, redshift=0.0)
    tng.write_group_catalog(tng.group_catalog_path(tng_dir, 99), header, groups)
