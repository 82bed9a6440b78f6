"""Synthetic cluster physics from the profiles alone (no cells): population statistics at
hundreds of clusters, in milliseconds each. tests/test_catalog.py checks the same quantities on
generated cells and ties the two together."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

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


def _fit(x, y):
    """Power-law fit in logs: slope and rms residual of y."""
    slope, icpt = np.polyfit(x, y, 1)
    return slope, float(np.std(y - (slope * x + icpt)))


def test_scaling_relation_slopes(population):
    models, summ = population
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


def test_core_excised_luminosity_scatter_and_core_included_larger(population):
    """The paper's L_X baseline: mass from core-excised L_X scatters ~15%; with the core, clearly more."""
    models, summ = population
    ln_m = np.log([m.m500 for m in models])
    _, ce = _fit(np.log([s["lx_ce"] for s in summ]), ln_m)
    _, ci = _fit(np.log([s["lx_ci"] for s in summ]), ln_m)
    assert 0.10 <= ce <= 0.20, ce
    assert ci > 1.3 * ce, (ci, ce)
    # Scatter of L at fixed M, the other reading of "L_X-M scatter".
    _, ce_l = _fit(ln_m, np.log([s["lx_ce"] for s in summ]))
    assert 0.12 <= ce_l <= 0.3


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_cool_core_fraction_as_configured(fraction):
    models, summ = _population(f"catalog.cool_core_fraction={fraction}")
    truth = np.array([m.cool_core for m in models])
    measured = np.array([s["k0"] < ph.K0_COOL_CORE for s in summ])
    tol = 3 * np.sqrt(fraction * (1 - fraction) / N)
    assert abs(truth.mean() - fraction) < tol
    assert abs(measured.mean() - fraction) < tol + 0.03
    assert (measured == truth).mean() > 0.93
    k0 = np.array([s["k0"] for s in summ])
    # Bimodal core entropies (Cavagnolo+09 peaks ~15 and ~150 keV cm^2, measured here within 0.05 R500).
    assert np.median(k0[truth]) < 45 and np.median(k0[~truth]) > 110


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
    assert np.array_equal(a.clump_offset, b.clump_offset)
    assert a.log_m500c != c.log_m500c


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
        # The dark-matter term (less the clumps, counted whole at their centres) grows wherever the cutout reaches.
        r = m.r500 * np.linspace(0.01, 2.0, 400)
        assert np.all(np.diff(ph.nongas_mass(m, prof, r) + ph.clump_mass_within(m, r)) > 0)


def test_band_emissivity_is_free_free_in_the_band():
    kt, ne, nh = 5.0, 1e-3, 1e-3 / ph.XE_IONISED
    full = ph.band_emissivity(ne, nh, kt, band=(0.0, np.inf))
    t_k = kt * KEV_ERG / K_B_ERG_K
    assert full == pytest.approx(1.4e-27 * 1.2 * np.sqrt(t_k) * ne * nh / ph.X_H)  # n_H + 4 n_He = n_H / X_H
    soft = ph.band_emissivity(ne, nh, kt)
    assert soft / full == pytest.approx(np.exp(-0.5 / kt) - np.exp(-2.0 / kt))
