"""Synthetic cluster physics from the profiles alone (no cells): population statistics at
hundreds of clusters, in milliseconds each. tests/test_catalog.py checks the same quantities on
generated cells and ties the two together.

The realistic population (the default) is held to scatters at fixed mass from simulations and
observations; the smooth one, kept so old runs reproduce, to what it always gave."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hpcmass.catalog import generate as gen
from hpcmass.catalog import physics as ph
from hpcmass.constants import K_B_ERG_K, KEV_ERG, M_P_G
from hpcmass.catalog.stage import synthetic_models
from hpcmass.params import load_params

N = 600


def _population(*sets):
    params = load_params(None, [f"catalog.n_clusters={N}", "run.seed=4242", *sets])
    models = synthetic_models(params)
    return models, [ph.summarise(m) for m in models]


@pytest.fixture(scope="module")
def population():
    return _population()


@pytest.fixture(scope="module")
def smooth():
    return _population("catalog.generator=smooth")


def _fit(x, y):
    """Power-law fit in logs: slope and rms residual of y."""
    slope, icpt = np.polyfit(x, y, 1)
    return slope, float(np.std(y - (slope * x + icpt)))


def test_smooth_scaling_relation_slopes(smooth):
    models, summ = smooth
    ln_m = np.log([m.m500 for m in models])
    t_slope, t_scatter = _fit(ln_m, np.log([s["tx_kev"] for s in summ]))
    # Self-similar T ~ M^(2/3); Arnaud+05 M ~ T^1.71 gives 0.585.
    assert 0.55 < t_slope < 0.72
    assert 0.05 < t_scatter < 0.2
    l_slope, _ = _fit(ln_m, np.log([s["lx_ce"] for s in summ]))
    # Soft-band L ~ M^1 self-similar, steeper with f_gas rising with mass (observed ~1.3-1.6).
    assert 1.1 < l_slope < 1.8
    g_slope, g_scatter = _fit(ln_m, np.log([s["mgas500"] for s in summ]))
    assert 1.1 < g_slope < 1.3  # V09 f_gas(M)
    assert 0.04 < g_scatter < 0.1


def test_smooth_core_excised_luminosity_scatter_and_core_included_larger(smooth):
    """The paper's L_X baseline: mass from core-excised L_X scatters ~15%; with the core, clearly more."""
    models, summ = smooth
    ln_m = np.log([m.m500 for m in models])
    _, ce = _fit(np.log([s["lx_ce"] for s in summ]), ln_m)
    _, ci = _fit(np.log([s["lx_ci"] for s in summ]), ln_m)
    assert 0.10 <= ce <= 0.20, ce
    assert ci > 1.3 * ce, (ci, ce)
    # Scatter of L at fixed M, the other reading of "L_X-M scatter".
    _, ce_l = _fit(ln_m, np.log([s["lx_ce"] for s in summ]))
    assert 0.12 <= ce_l <= 0.3


@pytest.mark.parametrize("fraction", [0.25, 0.5])
@pytest.mark.parametrize("generator, agree, ncc_k0", [("smooth", 0.93, 110), ("realistic", 0.75, 90)])
def test_cool_core_fraction_as_configured(fraction, generator, agree, ncc_k0):
    """The central entropy tells cool cores apart; less cleanly with continuous core radii and the
    inner component (TNG-Cluster's cool-core criteria are unimodal: Lehle et al. 2024)."""
    models, summ = _population(f"catalog.cool_core_fraction={fraction}", f"catalog.generator={generator}")
    truth = np.array([m.cool_core for m in models])
    measured = np.array([s["k0"] < ph.K0_COOL_CORE for s in summ])
    tol = 3 * np.sqrt(fraction * (1 - fraction) / N)
    assert abs(truth.mean() - fraction) < tol
    assert abs(measured.mean() - fraction) < tol + (0.03 if generator == "smooth" else 0.12)
    assert (measured == truth).mean() > agree
    k0 = np.array([s["k0"] for s in summ])
    # Bimodal core entropies (Cavagnolo+09 peaks ~15 and ~150 keV cm^2, measured here within 0.05 R500).
    assert np.median(k0[truth]) < 45 and np.median(k0[~truth]) > ncc_k0


def _scatter_at_fixed_mass(models, summ, key, select=slice(None)):
    ln_m = np.log([m.m500 for m in models])[select]
    return _fit(ln_m, np.log([s[key] for s in summ])[select])[1]


def test_gas_mass_scatter_runs_with_mass_and_no_longer_gives_mass_too_well(population):
    """ln M_gas at fixed M: ~5% above 1e14 in TNG (Aljamal et al. 2025), ~8% in XXL (Sereno et al.
    2019); larger in groups (Farahi et al. 2018). The issue's bar: ln M at fixed M_gas >= 0.08."""
    models, summ = population
    log_m = np.array([m.log_m500c for m in models])
    above, below = log_m >= 14.0, log_m < 13.8
    assert 0.04 <= _scatter_at_fixed_mass(models, summ, "mgas500", above) <= 0.08
    assert _scatter_at_fixed_mass(models, summ, "mgas500", below) > 1.5 * _scatter_at_fixed_mass(
        models, summ, "mgas500", above)
    _, mass_given_gas = _fit(np.log([s["mgas500"] for s in summ]), np.log([m.m500 for m in models]))
    assert mass_given_gas >= 0.08


def test_proxies_order_as_observed(population):
    """Gas mass is the least scattered proxy, then T_X, then L_X (XXL: ~8% and ~20%, luminosity
    more: Sereno et al. 2019); excising the core cuts the luminosity's scatter (Pratt et al. 2009)."""
    models, summ = population
    mgas, tx, ce, ci = (_scatter_at_fixed_mass(models, summ, k) for k in ("mgas500", "tx_kev", "lx_ce", "lx_ci"))
    assert mgas < tx < ce < ci, (mgas, tx, ce, ci)
    assert 0.08 <= tx <= 0.25 and ce < 0.7 * ci
    t_slope, _ = _fit(np.log([m.m500 for m in models]), np.log([s["tx_kev"] for s in summ]))
    assert 0.55 < t_slope < 0.72  # self-similar 2/3; Arnaud+05 M ~ T^1.71 gives 0.585
    # The mass from core-excised L_X scatters by more than the paper's image L_X with a 3% R500 error (14.6%):
    # the sample is no easier than TNG's.
    _, mass_given_ce = _fit(np.log([s["lx_ce"] for s in summ]), np.log([m.m500 for m in models]))
    assert 0.146 <= mass_given_ce <= 0.25


def test_disturbed_share_rises_with_mass_and_carries_a_secondary(population):
    models, _ = population
    log_m = np.array([m.log_m500c for m in models])
    disturbed = np.array([m.disturbed for m in models])
    low, high = disturbed[log_m < 13.8], disturbed[log_m > 14.3]
    assert 0.2 <= disturbed.mean() <= 0.4
    expected_low = float(np.mean(ph.disturbed_fraction(log_m[log_m < 13.8])))
    assert abs(low.mean() - expected_low) < 3 * np.sqrt(expected_low * (1 - expected_low) / len(low))
    assert high.mean() > low.mean()
    assert not any(m.disturbed and m.cool_core for m in models)
    for m in models:
        assert m.n_secondary == int(m.disturbed)
        if m.disturbed:
            grid = np.linspace(0.05, 0.5, 2000)  # mass ratio whose V09 gas is the secondary's gas
            ratio = np.interp(m.clump_mass[0], ph.f_gas_v09(grid * m.m500) * grid * m.m500, grid)
            assert 1 / 10 - 1e-3 <= ratio <= 1 / 3 + 1e-3
            assert 0.3 <= np.linalg.norm(m.clump_offset[0]) / m.r500 <= 1.0
            assert 0.02 <= np.linalg.norm(m.gas_offset) / m.r500 <= 0.1
        else:
            assert not np.any(m.gas_offset)


def test_core_radii_are_continuous_and_not_a_ruler(population, smooth):
    """V06's core radii span ~0.03-0.22 R500; the smooth population's two tight modes made a core's
    size a ruler for R500 (ln rc scatter 0.09 at fixed mass and class)."""
    for (models, _), at_least in ((population, 0.25), (smooth, 0.0)):
        ln_rc = np.log([m.rc for m in models])
        cool = np.array([m.cool_core for m in models])
        ln_m = np.log([m.m500 for m in models])
        within_class = max(_fit(ln_m[c], ln_rc[c])[1] for c in (cool, ~cool))
        assert within_class >= at_least
    models, _ = population
    x = np.array([m.rc / m.r500 for m in models])
    assert 0.04 <= x.min() and x.max() <= 0.22
    assert np.histogram(np.log(x), bins=8)[0].min() > 0.02 * len(x)  # no gap between the classes
    beta = np.array([m.beta for m in models])
    assert 0.08 <= beta.std() <= 0.11  # V06 16-84%: 0.49-0.72


def test_density_fluctuations_are_isobaric_and_clump_as_simulations():
    """Cells keep the profile's pressure; the clumping factor <rho^2>/<rho>^2 in a shell at R500,
    infalling groups included, is ~1.3-1.5 (Nagai & Lau 2011) and ~1.1 at 0.25 R500."""
    params = load_params(None, ["catalog.n_clusters=16", "run.seed=4242"])
    res = gen.Resolution(cell_mass=1e8, max_cells=10**8, r_max=2.0)
    at_r500, inner = [], []
    for m in synthetic_models(params):
        prof = ph.profiles(m)
        cells = gen.sample_cells(m, prof, res, 1)
        smooth_cells = slice(0, gen.cell_plan(m, prof, res).n_smooth)
        r = np.linalg.norm(cells["pos"][smooth_cells] - m.gas_offset, axis=1)
        # The ellipsoidal radius is what the profile is a function of.
        local = (cells["pos"][smooth_cells] - m.gas_offset) @ m.rotation / np.asarray(m.axes)
        r_ell = np.linalg.norm(local, axis=1)
        pressure = cells["rho"][smooth_cells] * cells["kt"][smooth_cells]
        np.testing.assert_allclose(pressure, prof.at("rho", r_ell) * prof.at("kt", r_ell), rtol=1e-6)
        r_all = np.linalg.norm(cells["pos"], axis=1)
        for lo, hi, out in ((0.9, 1.1, at_r500), (0.2, 0.3, inner)):
            shell = (r_all > lo * m.r500) & (r_all < hi * m.r500)
            mass, rho = cells["mass"][shell], cells["rho"][shell]
            out.append(np.sum(mass * rho) * np.sum(mass / rho) / np.sum(mass) ** 2)
        assert r.size
    assert 1.3 <= np.median(at_r500) <= 1.5
    assert 1.03 <= np.median(inner) <= 1.2


def test_fluctuation_mean_is_the_lognormal_moment():
    sigma = np.array([0.0, 0.3, 0.6])
    # E[f^a] for f = exp(delta + s^2/2), delta ~ N(0, s^2): exp(a s^2 / 2 + a^2 s^2 / 2).
    for a in (1.0, 1.75, -5.0 / 3.0):
        np.testing.assert_allclose(ph.fluctuation_mean(lambda f: f**a, sigma),
                                   np.exp(0.5 * a * sigma**2 + 0.5 * a * a * sigma**2), rtol=1e-8)


def test_clump_shares_count_a_straddling_secondary_in_part():
    params = load_params(None, ["catalog.n_clusters=200", "run.seed=4242"])
    m = next(m for m in synthetic_models(params) if m.disturbed)
    d = np.linalg.norm(m.clump_offset[0])
    share = ph.clump_share_within(m, [0.5 * d, d, 10.0 * m.r500])[:, 0]
    assert share[0] < share[1] < share[2] == pytest.approx(1.0)
    assert 0.3 < share[1] < 0.5  # a centrally concentrated sphere cut through its centre
    # A Monte Carlo of the truncated beta = 2/3 sphere agrees.
    rng = np.random.default_rng(0)
    y = np.linspace(0.0, m.clump_rt[0] / m.clump_rc[0], 4097)
    s = m.clump_rc[0] * np.interp(rng.uniform(size=200_000) * (y[-1] - np.arctan(y[-1])), y - np.arctan(y), y)
    v = rng.normal(size=(s.size, 3))
    pos = m.clump_offset[0] + s[:, None] * v / np.linalg.norm(v, axis=1, keepdims=True)
    assert share[1] == pytest.approx(np.mean(np.linalg.norm(pos, axis=1) < d), abs=0.01)


def test_mass_function_draws():
    lo, hi = 13.57, 15.06
    u = np.random.default_rng(1).uniform(size=4000)
    logm = ph.sample_log_m500c(u, "tinker08", lo, hi)
    assert logm.min() >= lo and logm.max() <= hi
    # colossus tinker08 (planck15, 205 Mpc/h box): 566 of 742 haloes in this range are below 1e14.
    below = (logm < 14).mean()
    assert abs(below - 566 / 742) < 3 * np.sqrt(0.76 * 0.24 / len(u))
    assert ph.expected_halo_count("tinker08", lo, hi, 205_000.0) == pytest.approx(742, rel=0.02)
    flat = ph.sample_log_m500c(u, "flat", lo, hi)
    assert stats.kstest(flat, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_a_cluster_depends_on_seed_and_index_only():
    kw = dict(mass_function="tinker08", log_m500c_min=13.57, log_m500c_max=15.06, box_ckpch=205_000.0,
              cool_core_fraction=0.4, f_gas_scatter=0.07, concentration_scatter=0.3, substructure_mean=3.0,
              edge_fraction=0.1)
    a, b, c = ph.draw_cluster(1, 5, **kw), ph.draw_cluster(1, 5, **kw), ph.draw_cluster(2, 5, **kw)
    assert a.log_m500c == b.log_m500c and np.array_equal(a.center_ckpch, b.center_ckpch)
    assert np.array_equal(a.clump_offset, b.clump_offset) and a.beta == b.beta
    assert a.log_m500c != c.log_m500c
    # Both generators share the mass, the place and the shape; the realistic one redraws the gas.
    s = ph.draw_cluster(1, 5, generator="smooth", **kw)
    assert s.log_m500c == a.log_m500c and np.array_equal(s.center_ckpch, a.center_ckpch)
    assert np.array_equal(s.rotation, a.rotation) and s.beta != a.beta
    # The smooth population is the one runs made before the realistic one: the same cluster, as then
    # (values from commit cbcad57's draw_cluster and summarise).
    old = ph.summarise(s)
    assert (s.f_gas, s.rc, s.beta) == pytest.approx((0.07230435970968933, 141.0999471125205, 0.5258098515976195),
                                                    rel=1e-12)
    assert (old["lx_ce"], old["mgas500"]) == pytest.approx((4.732493718542631e+42, 5557496303349.157), rel=1e-9)
    with pytest.raises(ValueError, match="generator 'lumpy'"):
        ph.draw_cluster(1, 5, generator="lumpy", **kw)


def test_profiles_hydrostatic_and_normalised(population):
    models, _ = population
    for m in models[:50]:
        prof = ph.profiles(m)
        m_gas = np.interp(np.log(m.r500), np.log(prof.r), prof.m_gas) + ph.clump_mass_within(m, m.r500)[0]
        assert m_gas == pytest.approx(m.f_gas * m.m500, rel=1e-3)
        # Thermal + non-thermal pressure balances gravity: dP/dr = -rho G M / r^2.
        p = prof.kt / (1 - m.f_nt) * prof.rho / (ph.mu_mass(ph.XE_IONISED) * M_P_G * 1e10 / KEV_ERG)
        sel = (prof.r > 0.01 * m.r500) & (prof.r < 3 * m.r500)
        dpdr = np.gradient(p, prof.r)[sel]
        assert np.allclose(dpdr, -(prof.rho * ph.G_KPC * prof.m_tot / prof.r**2)[sel], rtol=0.02)
        # The dark-matter term (less the clumps' gas) grows wherever the cutout reaches.
        r = m.r500 * np.linspace(0.01, 2.0, 400)
        assert np.all(np.diff(ph.nongas_mass(m, prof, r) + ph.clump_mass_within(m, r)) > 0)
    # The thermal pressure alone gives masses low by the non-thermal share: ~15% in TNG300 (Aldas et al. 2026).
    assert 0.12 <= np.median([m.f_nt for m in models]) <= 0.18


def test_band_emissivity_is_free_free_in_the_band():
    kt, ne, nh = 5.0, 1e-3, 1e-3 / ph.XE_IONISED
    full = ph.band_emissivity(ne, nh, kt, band=(0.0, np.inf))
    t_k = kt * KEV_ERG / K_B_ERG_K
    assert full == pytest.approx(1.4e-27 * 1.2 * np.sqrt(t_k) * ne * nh / ph.X_H)  # n_H + 4 n_He = n_H / X_H
    soft = ph.band_emissivity(ne, nh, kt)
    assert soft / full == pytest.approx(np.exp(-0.5 / kt) - np.exp(-2.0 / kt))
