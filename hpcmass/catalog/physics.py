"""The synthetic cluster population and its gas, as pure functions (no files, no MPI).

A cluster is a spherical NFW total-mass halo (c500 from colossus' diemer19 with log-normal
scatter) holding a triaxial gas atmosphere: Vikhlinin et al. 2006 density shape, a bimodal
cool-core population, gas fraction from Vikhlinin et al. 2009 with scatter, temperature from
hydrostatic equilibrium in the NFW potential less a random non-thermal pressure fraction,
a centrally peaked metallicity profile around 0.3 solar, a few gas-rich infalling groups and
a few cold/effective-EOS star-forming cells at the centre. Each parameter's source is named
where it is set. Every draw of cluster ``k`` comes from ``rng(seed, "catalog", k)`` (and its
sub-streams), so a cluster never depends on the sample size.

``generator="realistic"`` (the default) adds what TNG clusters have and the smooth population
lacks (:func:`realistic_overrides`): a disturbed population with a secondary halo and an offset
gas peak, log-normal density fluctuations, continuous core radii with an inner cool-core
component, wider beta, an f_gas scatter that grows towards groups, and the non-thermal share set
to TNG's hydrostatic bias; tests/test_catalog_physics.py holds it to sourced scatters at fixed
mass. ``"smooth"`` is the population before that, kept so old runs reproduce (tuned so that the
mass from core-excised L_X scatters by ~13%, from the core-included one by ~20%).
Known offset: T_X follows M^0.59 like Arnaud et al. 2005 but at ~0.5 (smooth: ~0.65) of their
normalisation for a given true mass: their masses are hydrostatic, and the non-thermal share, the
cold phase of the fluctuations and the infalling groups lower the spectroscopic-like temperature.

Units here: physical kpc, Msun, keV, cm^-3, erg/s; z = 0, Planck 2015 (TNG's cosmology).
Mass and length conversions use TNG's own unit constants, so yt reading the cutouts' headers
gets exactly the numbers used here.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation

from ..constants import G_CGS, K_B_ERG_K, KEV_ERG, KPC_CM, M_P_G, MSUN_G
from ..seeding import rng

# --- constants -----------------------------------------------------------------------------

G_KPC = G_CGS * MSUN_G / KPC_CM / 1e10  # G in kpc (km/s)^2 / Msun
#: Hydrogen mass fraction and n_e/n_H of a fully ionised H+He plasma (TNG FAQ recipe).
X_H = 0.76
XE_IONISED = 1.0 + (1.0 - X_H) / (2.0 * X_H)
GAMMA = 5.0 / 3.0
#: TNG scripts normalise GFM_Metallicity (a metal mass fraction) by this solar value.
Z_SUN = 0.0127
#: TNG300-1 cosmology (Planck 2015) as written in its snapshot headers.
HUBBLE, OMEGA_M, OMEGA_L, OMEGA_B = 0.6774, 0.3089, 0.6911, 0.0486
#: Star formation threshold of TNG's effective EOS (Springel & Hernquist 2003), n_H in cm^-3.
N_H_SF = 0.106
#: The soft band of the catalogue's L_X (rest frame, keV) and the core-excised aperture (R500).
BAND_KEV = (0.5, 2.0)
CORE_EXCISED = (0.15, 1.0)
#: Radius (R500) inside which the central entropy is measured, and the cool-core threshold:
#: the gap of the bimodal ACCEPT core entropies (Cavagnolo et al. 2009) lies at 30-50 keV cm^2;
#: mass-weighted within 0.05 R500 the synthetic populations separate at ~60 (see tests).
K0_RADIUS = 0.05
K0_COOL_CORE = 60.0

# --- population recipe: Vikhlinin+06 (V06) profile shapes, widened where noted ----------------

BETA = (0.60, 0.05)               # V06 beta: mean, sigma (V06 fits: 16-84% 0.49-0.72)
RC_NCC, RC_CC = 0.20, 0.10        # core radius / R500
LN_RC_SCATTER = 0.09
ALPHA_CC = (0.4, 1.0)             # central cusp slope of cool cores (NCC: 0); V06 median 1.7
LN_RS_SCATTER = 0.3               # rs = R500 e^N(0, .) (V06: rs/R500 0.43-2.2)
EPS = (2.0, 4.0)                  # outer steepening epsilon, uniform
F_NT = (0.10, 0.05, 0.0, 0.3)     # non-thermal pressure fraction: mean, sigma, clip (simulations: 5-30%)
C_OVER_A = (0.75, 0.08, 0.55, 0.95)  # gas c/a: mean, sigma, clip (X-ray gas rounder than DM)
CLUMP_GAS_FRACTION = (-2.5, -1.3)  # log10 of clump gas / host gas, uniform
CLUMP_DISTANCE = (0.3, 1.6)       # R500, uniform
CLUMP_F_GAS = 0.10                # gas-rich infalling groups: M_sub = m_gas / 0.1
CLUMP_RC, CLUMP_RT = 0.2, 0.7     # clump core and (stripping) truncation radius / its own R500
SF_LOG_MASS = {True: (9.5, 10.5), False: (8.5, 9.5)}  # log10 star-forming gas mass, CC / NCC

# --- the realistic population: what TNG-like clusters add to the smooth one -------------------

GENERATORS = ("realistic", "smooth")
#: Disturbed share at 10^13.5 and 10^15 Msun, linear in log M between: the unrelaxed fraction grows
#: with mass in simulations (Roberts et al. 2019, arXiv:1909.08645; ~20-40% by the usual X-ray
#: morphology cuts). Only non-cool-core clusters are disturbed (CC high, disturbed low: Pratt+2009).
DISTURBED_FRACTION = ((13.5, 0.2), (15.0, 0.4))
#: A disturbed cluster's secondary halo: mass ratio log-uniform 1:10-1:3, at 0.3-1 R500 from the
#: potential minimum; its own V09 gas fraction, a beta = 2/3 core of 0.15 and truncation of 1
#: of its own R500 (less stripped than the small infalling groups).
SECONDARY_RATIO = (1.0 / 10.0, 1.0 / 3.0)
SECONDARY_DISTANCE = (0.3, 1.0)
SECONDARY_RC, SECONDARY_RT = 0.15, 1.0
#: Gas peak offset from the potential minimum of a disturbed cluster, log-uniform, R500: X-ray
#: peak-BCG offsets above ~0.02 R500 mark disturbed clusters (Sanderson, Edge & Smith 2009).
GAS_OFFSET = (0.02, 0.1)
#: Log-normal density fluctuations (isobaric) of the bulk gas, sigma of ln rho: 0.15 at the centre
#: (Zhuravleva et al. 2013: FWHM of the bulk log-density PDF ~0.15 dex at the centre, growing to
#: ~0.5 dex at 2 R500) and, at R500, sqrt(ln C) for a clumping factor C drawn uniformly in the
#: range below; with the infalling groups the total C at R500 is 1.3-1.5 (Nagai & Lau 2011).
LN_RHO_SIGMA_CENTRE = 0.15
CLUMPING_R500 = (1.15, 1.35)
#: Core radius / R500, log-uniform (V06 fits span ~0.03-0.22 R500), cool cores in the lower part;
#: V06's second, inner beta component in cool cores: core U(0.005, 0.03) R500, beta 1, and
#: (at its core radius) U(0.1, 0.5) of the main term. The cusp is milder than the smooth
#: population's because the inner term now carries part of the central excess.
RC_REALISTIC = {True: (0.04, 0.12), False: (0.10, 0.22)}
RC2 = (0.005, 0.03)
BETA2 = 1.0
INNER_AMPLITUDE = (0.1, 0.5)
ALPHA_CC_REALISTIC = (0.1, 0.5)
#: V06 beta: 16-84% of their fits span 0.49-0.72, i.e. sigma ~0.1.
BETA_REALISTIC = (0.60, 0.10, 0.40, 0.90)
#: Thermal pressure short of hydrostatic by TNG300's X-ray hydrostatic bias (masses ~15% low:
#: Aldas et al. 2026, arXiv:2606.21495), as mean, sigma, clip of the non-thermal share.
F_NT_REALISTIC = (0.15, 0.07, 0.0, 0.4)
#: Default ln f_gas scatter (catalog.f_gas_scatter unset): the smooth population's, and the
#: realistic one's above 10^14 Msun.
F_GAS_SCATTER = {"smooth": 0.07, "realistic": 0.05}
#: ln f_gas scatter: the configured value above 10^14 Msun (TNG: ~5% for M500c > 1e14, Aljamal et
#: al. 2025), growing linearly in log M to this multiple of it at 10^13.5, where AGN feedback empties
#: groups unevenly (the running of Farahi et al. 2018, BAHAMAS: ~0.15-0.2 in ln at group scale,
#: read from their figures, not a tabulated value).
F_GAS_SCATTER_GROUP = (13.5, 14.0, 3.5)


@dataclass(frozen=True, eq=False)
class ClusterModel:
    """Everything that defines synthetic cluster ``index`` (drawn by :func:`draw_cluster`)."""

    index: int
    log_m500c: float
    m500: float          # Msun
    r500: float          # kpc
    c500: float          # R500 / r_s of the NFW total mass
    f_gas: float         # gas mass / M500 within R500 (smooth + clumps)
    cool_core: bool
    alpha: float         # V06 density shape: cusp, core radius, beta, r_s, epsilon (kpc)
    rc: float
    beta: float
    rs: float
    eps: float
    f_nt: float          # non-thermal share of the hydrostatic pressure
    z_out: float         # metallicity (solar): plateau, central peak, e-folding radius / R500
    z_peak: float
    z_scale: float
    axes: tuple[float, float, float]  # gas ellipsoid semi-axis factors, product 1
    rotation: np.ndarray              # (3, 3) principal frame -> box frame
    center_ckpch: np.ndarray          # (3,) in [0, box)
    clump_mass: np.ndarray            # (n,) gas Msun
    clump_offset: np.ndarray          # (n, 3) kpc from the centre
    clump_rc: np.ndarray              # kpc
    clump_rt: np.ndarray              # kpc, truncation
    clump_kt: np.ndarray              # keV
    sf_mass: float                    # star-forming gas, Msun
    # The realistic population only (see realistic_overrides); the smooth one keeps these defaults.
    generator: str = "smooth"
    disturbed: bool = False
    n_secondary: int = 0              # the first n clumps are a secondary halo, not infalling groups
    gas_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # kpc, gas centre - potential minimum
    ln_rho_sigma: tuple[float, float] = (0.0, 0.0)  # log-normal density fluctuations at the centre, at R500
    rc2: float = 0.0                  # V06 inner component: core radius (kpc), amplitude at rc2
    inner: float = 0.0


# --- cosmology and mass function -------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def cosmology():
    """colossus' planck15 (= TNG's cosmology), with nothing cached under $HOME.

    colossus pickles its tables into ~/.colossus (its concentration tables always): with many
    ranks on a shared home that is a write race, so each process gets a private cache directory.
    """
    from colossus import settings
    from colossus.cosmology import cosmology as cc

    cache = tempfile.mkdtemp(prefix="hpcmass-colossus-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    settings.BASE_DIR = cache
    return cc.setCosmology("planck15", persistence="")


def rho_crit() -> float:
    """Critical density at z = 0 [Msun / kpc^3]."""
    c = cosmology()
    return float(c.rho_c(0.0)) * c.h**2


def r500_kpc(m500):
    return np.cbrt(3.0 * np.asarray(m500) / (4.0 * np.pi * 500.0 * rho_crit()))


@functools.lru_cache(maxsize=8)
def _mass_cdf(kind: str, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    logm = np.linspace(lo, hi, 513)
    if kind == "flat":
        return logm, (logm - lo) / (hi - lo)
    from colossus.lss import mass_function

    h = cosmology().h
    dn = mass_function.massFunction(10**logm * h, 0.0, mdef="500c", model=kind, q_out="dndlnM")
    cdf = cumulative_trapezoid(dn, logm, initial=0.0)
    return logm, cdf / cdf[-1]


def sample_log_m500c(u, kind: str, lo: float, hi: float):
    """Inverse-CDF draw of log10 M500c from the halo mass function (or flat in log M)."""
    logm, cdf = _mass_cdf(kind, float(lo), float(hi))
    return np.interp(u, cdf, logm)


def expected_halo_count(kind: str, lo: float, hi: float, box_ckpch: float) -> float:
    """Haloes expected in a periodic box of side ``box_ckpch`` (tinker08 only)."""
    from colossus.lss import mass_function

    logm = np.linspace(lo, hi, 513)
    h = cosmology().h
    dn = mass_function.massFunction(10**logm * h, 0.0, mdef="500c", model=kind, q_out="dndlnM")
    return float(np.trapezoid(dn, logm * np.log(10.0)) * (box_ckpch / 1e3) ** 3)


@functools.lru_cache(maxsize=1)
def _c500_table() -> tuple[np.ndarray, np.ndarray]:
    from colossus.halo import concentration

    logm = np.linspace(12.0, 16.0, 81)
    c = concentration.concentration(10**logm * cosmology().h, "500c", 0.0, model="diemer19")
    return logm, np.asarray(c)


def c500_median(log_m500c):
    logm, c = _c500_table()
    return np.interp(log_m500c, logm, c)


def f_gas_v09(m500):
    """Vikhlinin et al. 2009 f_gas(<R500) = (0.72/h)^1.5 [0.125 + 0.037 log10 M15], M15 in 1e15/h Msun."""
    m15 = np.asarray(m500) * HUBBLE / 1e15
    return (0.72 / HUBBLE) ** 1.5 * (0.125 + 0.037 * np.log10(m15))


def kt_arnaud05(m500):
    """Arnaud et al. 2005 M-T relation inverted: M500 = 3.84e14 (T / 5 keV)^1.71 h70^-1 Msun, z = 0."""
    h70 = HUBBLE / 0.7
    return 5.0 * (np.asarray(m500) * h70 / 3.84e14) ** (1.0 / 1.71)


# --- drawing a cluster -----------------------------------------------------------------------


def draw_cluster(seed: int, k: int, *, mass_function: str, log_m500c_min: float, log_m500c_max: float,
                 box_ckpch: float, cool_core_fraction: float, f_gas_scatter: float,
                 concentration_scatter: float, substructure_mean: float, edge_fraction: float,
                 generator: str = "realistic") -> ClusterModel:
    """Draw cluster ``k``: all its properties come from ``rng(seed, "catalog", k)`` in a fixed order.

    The realistic generator then redraws what it changes from ``rng(seed, "catalog", k,
    "realistic")``: both populations share masses, centres, shapes and infalling groups.
    """
    if generator not in GENERATORS:
        raise ValueError(f"generator {generator!r} is not one of {GENERATORS}")
    g = rng(seed, "catalog", k)
    log_m = float(sample_log_m500c(g.uniform(), mass_function, log_m500c_min, log_m500c_max))
    m500 = 10.0**log_m
    r500 = float(r500_kpc(m500))
    c500 = float(c500_median(log_m) * np.exp(g.normal(0.0, concentration_scatter)))
    f_gas = float(min(f_gas_v09(m500) * np.exp(g.normal(0.0, f_gas_scatter)), 0.9 * OMEGA_B / OMEGA_M))
    cool = bool(g.uniform() < cool_core_fraction)
    alpha = float(g.uniform(*ALPHA_CC)) if cool else 0.0
    rc = (RC_CC if cool else RC_NCC) * r500 * float(np.exp(g.normal(0.0, LN_RC_SCATTER)))
    beta = float(g.normal(*BETA))
    rs = r500 * float(np.exp(g.normal(0.0, LN_RS_SCATTER)))
    eps = float(g.uniform(*EPS))
    f_nt = float(np.clip(g.normal(F_NT[0], F_NT[1]), F_NT[2], F_NT[3]))
    z_out = float(np.clip(g.normal(0.3, 0.03), 0.15, 0.45))
    z_peak = float(g.uniform(0.6, 0.9) if cool else g.uniform(0.35, 0.5))
    z_scale = 0.08 if cool else 0.15

    s = float(np.clip(g.normal(*C_OVER_A[:2]), *C_OVER_A[2:]))
    q = float(g.uniform(s, 1.0))
    norm = np.cbrt(q * s)
    axes = (1.0 / norm, q / norm, s / norm)
    rotation = Rotation.random(random_state=g).as_matrix()

    center = g.uniform(0.0, box_ckpch, size=3)
    if g.uniform() < edge_fraction:
        # Put the centre within 0.5 R500 of a box face: its cutout straddles the periodic edge.
        axis = int(g.integers(3))
        center[axis] = (g.uniform(-0.5, 0.5) * r500 * HUBBLE) % box_ckpch

    n_clumps = int(g.poisson(substructure_mean))
    clump_mass = f_gas * m500 * 10.0 ** g.uniform(*CLUMP_GAS_FRACTION, size=n_clumps)
    dist = g.uniform(*CLUMP_DISTANCE, size=n_clumps) * r500
    clump_offset = _isotropic(g, n_clumps) * dist[:, None]
    r500_sub = r500_kpc(clump_mass / CLUMP_F_GAS)
    clump_kt = np.maximum(kt_arnaud05(clump_mass / CLUMP_F_GAS), 0.5)
    sf_mass = 10.0 ** float(g.uniform(*SF_LOG_MASS[cool]))
    model = ClusterModel(
        index=k, log_m500c=log_m, m500=m500, r500=r500, c500=c500, f_gas=f_gas, cool_core=cool,
        alpha=alpha, rc=rc, beta=beta, rs=rs, eps=eps, f_nt=f_nt, z_out=z_out, z_peak=z_peak,
        z_scale=z_scale, axes=axes, rotation=rotation, center_ckpch=center, clump_mass=clump_mass,
        clump_offset=clump_offset, clump_rc=CLUMP_RC * r500_sub, clump_rt=CLUMP_RT * r500_sub, clump_kt=clump_kt,
        sf_mass=sf_mass)
    if generator == "smooth":
        return model
    return replace(model, **realistic_overrides(rng(seed, "catalog", k, "realistic"), model, f_gas_scatter,
                                                cool_core_fraction))


def disturbed_fraction(log_m500c):
    (m0, f0), (m1, f1) = DISTURBED_FRACTION
    return np.interp(log_m500c, [m0, m1], [f0, f1])


def f_gas_scatter_at(log_m500c, scatter: float):
    """The realistic population's ln f_gas scatter at mass ``log_m500c`` (F_GAS_SCATTER_GROUP)."""
    lo, hi, factor = F_GAS_SCATTER_GROUP
    return scatter * np.interp(log_m500c, [lo, hi], [factor, 1.0])


def _log_uniform(g: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(g.uniform(np.log(lo), np.log(hi))))


def realistic_overrides(g: np.random.Generator, m: ClusterModel, f_gas_scatter: float,
                        cool_core_fraction: float) -> dict:
    """What the realistic population redraws for cluster ``m`` (constants above, each sourced)."""
    cool = m.cool_core
    f_gas = float(min(f_gas_v09(m.m500) * np.exp(g.normal(0.0, f_gas_scatter_at(m.log_m500c, f_gas_scatter))),
                      0.9 * OMEGA_B / OMEGA_M))
    # Disturbed among the non-cool cores, so that the overall share follows DISTURBED_FRACTION.
    p_disturbed = float(disturbed_fraction(m.log_m500c)) / max(1.0 - cool_core_fraction, 1e-9)
    disturbed = bool(not cool and g.uniform() < p_disturbed)
    beta = float(np.clip(g.normal(*BETA_REALISTIC[:2]), *BETA_REALISTIC[2:]))
    out = dict(
        generator="realistic", f_gas=f_gas, beta=beta, disturbed=disturbed,
        rc=_log_uniform(g, *RC_REALISTIC[cool]) * m.r500,
        alpha=float(g.uniform(*ALPHA_CC_REALISTIC)) if cool else 0.0,
        rc2=_log_uniform(g, *RC2) * m.r500 if cool else 0.0,
        inner=float(g.uniform(*INNER_AMPLITUDE)) if cool else 0.0,
        f_nt=float(np.clip(g.normal(*F_NT_REALISTIC[:2]), *F_NT_REALISTIC[2:])),
        ln_rho_sigma=(LN_RHO_SIGMA_CENTRE, float(np.sqrt(np.log(g.uniform(*CLUMPING_R500))))),
    )
    if disturbed:
        m_sec = m.m500 * _log_uniform(g, *SECONDARY_RATIO)
        r500_sec = float(r500_kpc(m_sec))
        offset = _isotropic(g, 1) * g.uniform(*SECONDARY_DISTANCE) * m.r500
        out.update(
            n_secondary=1,
            gas_offset=_isotropic(g, 1)[0] * _log_uniform(g, *GAS_OFFSET) * m.r500,
            clump_mass=np.concatenate([[f_gas_v09(m_sec) * m_sec], m.clump_mass]),
            clump_offset=np.concatenate([offset, m.clump_offset]),
            clump_rc=np.concatenate([[SECONDARY_RC * r500_sec], m.clump_rc]),
            clump_rt=np.concatenate([[SECONDARY_RT * r500_sec], m.clump_rt]),
            clump_kt=np.concatenate([[kt_arnaud05(m_sec)], m.clump_kt]))
    return out


def _isotropic(g: np.random.Generator, n: int) -> np.ndarray:
    v = g.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# --- radial profiles -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Profiles:
    """Smooth-gas profiles of one cluster on a log radial grid (in ellipsoidal radius)."""

    r: np.ndarray       # kpc
    rho: np.ndarray     # gas density, Msun / kpc^3
    m_gas: np.ndarray   # smooth gas mass within r, Msun
    m_tot: np.ndarray   # total mass within r (NFW), Msun
    kt: np.ndarray      # thermal temperature, keV
    z: np.ndarray       # metallicity, solar

    def at(self, name: str, r):
        """Log-log interpolation of a positive profile at radii ``r``."""
        return np.exp(np.interp(np.log(np.maximum(r, self.r[0])), np.log(self.r), np.log(getattr(self, name))))


def nfw_mass(m: ClusterModel, r):
    """NFW total mass within r, normalised to M500 at R500."""
    def mu(y):
        return np.log1p(y) - y / (1.0 + y)
    return m.m500 * mu(m.c500 * np.asarray(r) / m.r500) / mu(m.c500)


def m200c(m: ClusterModel) -> float:
    """M200c of the NFW total mass [Msun]: where its mean density falls to 200 rho_crit."""
    def excess(r):
        return float(nfw_mass(m, r)) - 200.0 * rho_crit() * 4.0 / 3.0 * np.pi * r**3
    return float(nfw_mass(m, brentq(excess, 0.5 * m.r500, 4.0 * m.r500, xtol=1e-10 * m.r500)))


def clump_share_within(m: ClusterModel, r, power: int = 1) -> np.ndarray:
    """Share of each clump's int rho^power dV inside spheres of radius ``r``: (len(r), n_clumps).

    The smooth population counts a clump whole once its centre is inside (as its runs did); the
    realistic one integrates each clump's spherical shells against the sphere (a shell of radius
    s at distance d has (R^2 - (d - s)^2) / (4 d s) of its area inside radius R), because a
    secondary halo near R500 straddles it.
    """
    r = np.atleast_1d(np.asarray(r, dtype=float))
    d = np.linalg.norm(m.clump_offset, axis=1)
    if m.generator == "smooth":
        return (d[None, :] < r[:, None]).astype(float)
    out = np.empty((len(r), len(d)))
    for j in range(len(d)):
        sh = np.linspace(0.0, m.clump_rt[j], 257)[1:]
        w = sh**2 * (1.0 + (sh / m.clump_rc[j]) ** 2) ** -power
        inside = np.clip((r[:, None] ** 2 - (d[j] - sh[None, :]) ** 2) / (4.0 * d[j] * sh[None, :]), 0.0, 1.0)
        out[:, j] = np.trapezoid(w * inside, sh, axis=1) / np.trapezoid(w, sh)
    return out


def clump_mass_within(m: ClusterModel, r):
    """Clump gas within radius r (see :func:`clump_share_within`)."""
    return (clump_share_within(m, r) * m.clump_mass[None, :]).sum(axis=1)


def ln_rho_sigma_at(m: ClusterModel, r):
    """Width of the log-normal density fluctuations at radius r: linear from the centre to R500 and on."""
    s0, s500 = m.ln_rho_sigma
    return s0 + (s500 - s0) * np.asarray(r) / m.r500


_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(16)
_GH_W = _GH_W / np.sqrt(2.0 * np.pi)


def fluctuation_mean(fn, sigma):
    """Mass-weighted mean of ``fn(f)`` over isobaric log-normal fluctuations of width ``sigma``.

    A cell's density is the profile's times f = exp(delta + sigma^2/2), delta ~ N(0, sigma^2), and
    its temperature the profile's over f: equal-mass cells then keep the profile's volume, mean
    temperature and pressure, and the clumping factor <rho^2>_V / <rho>_V^2 is exp(sigma^2).
    ``fn`` takes f with a trailing quadrature axis; sigma broadcasts against the leading ones.
    """
    s = np.asarray(sigma, dtype=float)[..., None]
    return np.sum(_GH_W * fn(np.exp(s * _GH_X + 0.5 * s * s)), axis=-1)


def profiles(m: ClusterModel, n: int = 768, r_out: float = 10.0) -> Profiles:
    r = m.r500 * np.logspace(-4.0, np.log10(r_out), n)
    npne = _v06_main(m, r)
    if m.inner:
        # V06's second beta component, scaled to ``inner`` of the main term at its core radius rc2.
        npne = npne + m.inner * _v06_main(m, m.rc2) * (2.0 / (1.0 + (r / m.rc2) ** 2)) ** (3.0 * BETA2)
    shape = np.sqrt(npne)
    lnr = np.log(r)
    # Inner power law (rho ~ r^-alpha/2) below the grid, then the trapezoid in ln r.
    inner = 4.0 * np.pi * r[0] ** 3 * shape[0] / (3.0 - 0.5 * m.alpha)
    cum = inner + cumulative_trapezoid(4.0 * np.pi * r**3 * shape, lnr, initial=0.0)
    target = m.f_gas * m.m500 - clump_mass_within(m, m.r500)[0]
    norm = max(target, 0.5 * m.f_gas * m.m500) / np.interp(np.log(m.r500), lnr, cum)
    rho, m_gas = norm * shape, norm * cum
    m_tot = nfw_mass(m, r)
    # Hydrostatic pressure P(r) = int_r^inf rho G M / r'^2 dr', zero at r_out * R500.
    integrand = rho * G_KPC * m_tot / r
    p = cumulative_trapezoid(integrand[::-1], -lnr[::-1], initial=0.0)[::-1]
    kt = (1.0 - m.f_nt) * mu_mass(XE_IONISED) * M_P_G * p / rho * 1e10 / KEV_ERG
    kt = np.maximum(kt, 1e-3)
    z = m.z_out + (m.z_peak - m.z_out) * np.exp(-r / (m.z_scale * m.r500))
    return Profiles(r=r, rho=rho, m_gas=m_gas, m_tot=m_tot, kt=kt, z=z)


def _v06_main(m: ClusterModel, r):
    """V06's main n_p n_e shape term (cusp, core, beta, steepening at rs)."""
    r = np.asarray(r)
    x = r / m.rc
    return x**-m.alpha / (1.0 + x * x) ** (3.0 * m.beta - 0.5 * m.alpha) / (1.0 + (r / m.rs) ** 3) ** (m.eps / 3.0)


def nongas_mass(m: ClusterModel, prof: Profiles, r):
    """The dark-matter (+stars) term: NFW total minus the model gas (smooth + clumps) within r."""
    r = np.asarray(r, dtype=float)
    smooth = np.interp(np.log(np.maximum(r, prof.r[0])), np.log(prof.r), prof.m_gas)
    return nfw_mass(m, r) - smooth - clump_mass_within(m, r.ravel()).reshape(r.shape)


# --- thermodynamics shared by the summary and the cell measurement ----------------------------


def mu_mass(xe):
    """Mean molecular weight (m_p) for electron abundance xe = n_e / n_H (TNG FAQ)."""
    return 4.0 / (1.0 + 3.0 * X_H + 4.0 * X_H * np.asarray(xe))


def n_h(rho_msun_kpc3):
    return X_H * np.asarray(rho_msun_kpc3) * MSUN_G / KPC_CM**3 / M_P_G


def band_emissivity(n_e, nh, kt, band=BAND_KEV):
    """Free-free emissivity in a band [erg s^-1 cm^-3] (Rybicki & Lightman 5.15, g_ff = 1.2).

    Continuum only, no lines: a luminosity proxy for scaling relations, not the observe stage's
    APEC spectrum. Sum of n_i Z_i^2 over H and He = n_H (1 + Y/X).
    """
    kt = np.asarray(kt, dtype=float)
    t_k = kt * KEV_ERG / K_B_ERG_K
    frac = np.exp(-band[0] / kt) - np.exp(-band[1] / kt)
    return 1.4e-27 * 1.2 * np.sqrt(t_k) * n_e * nh * (1.0 + (1.0 - X_H) / X_H) * frac


def entropy(kt, n_e):
    """K = kT n_e^(-2/3) [keV cm^2]."""
    return kt * np.asarray(n_e) ** (-2.0 / 3.0)


def spectroscopic_weight(rho, volume, kt):
    """Spectroscopic-like temperature weight rho^2 T^-3/4 dV (Mazzotta et al. 2004)."""
    return rho * rho * volume * np.asarray(kt) ** -0.75


# --- gas-free summary statistics --------------------------------------------------------------


def summarise(m: ClusterModel, prof: Profiles | None = None) -> dict[str, float]:
    """The catalogue's gas-derived quantities from the profiles alone (shells, no cells).

    Matches what :func:`hpcmass.catalog.tng.measure_cluster` measures on the cells to a few per
    cent (ellipticity, the gas peak offset and, in the smooth population, clump overlap aside),
    at a millisecond per cluster: the statistical tests use it to reach hundreds of clusters.
    """
    prof = prof or profiles(m)
    r, lnr = prof.r, np.log(prof.r)
    nh = n_h(prof.rho)[:, None]
    ne = XE_IONISED * nh
    kt = prof.kt[:, None]
    dv = 4.0 * np.pi * r**3  # per unit ln r, kpc^3
    sigma = ln_rho_sigma_at(m, r)
    # Per unit volume, averaged over the density fluctuations (fluctuation_mean): a cell of density
    # factor f emits f times the mean per unit mass, at temperature kT / f.
    em = fluctuation_mean(lambda f: f * band_emissivity(ne, nh, kt / f), sigma) * dv * KPC_CM**3
    w = spectroscopic_weight(prof.rho, dv, prof.kt) * fluctuation_mean(lambda f: f**1.75, sigma)
    wt = spectroscopic_weight(prof.rho, dv, prof.kt) * prof.kt * fluctuation_mean(lambda f: f**0.75, sigma)
    k_mass = prof.rho * dv * entropy(prof.kt, ne[:, 0]) * fluctuation_mean(lambda f: f ** (-5.0 / 3.0), sigma)

    def integral(y, lo, hi):
        sel = (r >= lo * m.r500) & (r <= hi * m.r500)
        return float(np.trapezoid(y[sel], lnr[sel]))

    within = clump_share_within(m, [CORE_EXCISED[0] * m.r500, m.r500], power=2)
    ce, ci = within[1] - within[0], within[1]
    clump_l = clump_luminosity(m)
    w_clump = spectroscopic_weight(1.0, clump_emission_integral(m), m.clump_kt) * ce
    return {
        "lx_ce": integral(em, *CORE_EXCISED) + float(clump_l @ ce),
        "lx_ci": integral(em, 0.0, 1.0) + float(clump_l @ ci),
        "tx_kev": (integral(wt, *CORE_EXCISED) + float(w_clump @ m.clump_kt)) / (integral(w, *CORE_EXCISED)
                                                                                 + float(w_clump.sum())),
        "k0": integral(k_mass, 0.0, K0_RADIUS) / integral(prof.rho * dv, 0.0, K0_RADIUS),
        "mgas500": float(np.interp(np.log(m.r500), lnr, prof.m_gas) + clump_mass_within(m, m.r500)[0]),
    }


def clump_central_density(m: ClusterModel):
    """rho0 of each clump's truncated beta=2/3 model: M = 4 pi rho0 rc^3 (y - atan y), y = rt/rc."""
    y = m.clump_rt / m.clump_rc
    return m.clump_mass / (4.0 * np.pi * m.clump_rc**3 * (y - np.arctan(y)))


def clump_emission_integral(m: ClusterModel):
    """int rho^2 dV of each clump [Msun^2 / kpc^3]."""
    y = m.clump_rt / m.clump_rc
    return clump_central_density(m) ** 2 * 4.0 * np.pi * m.clump_rc**3 * 0.5 * (np.arctan(y) - y / (1.0 + y * y))


def clump_luminosity(m: ClusterModel):
    """Band luminosity of each clump: emissivity integrated over its truncated beta model."""
    rho0 = clump_central_density(m)
    nh0 = n_h(rho0)
    vol = clump_emission_integral(m) / rho0**2 * KPC_CM**3  # int (rho/rho0)^2 dV, cm^3
    return band_emissivity(XE_IONISED * nh0, nh0, m.clump_kt) * vol
