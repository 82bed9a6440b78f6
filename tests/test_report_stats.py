"""Report statistics and the L_X baseline against synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from hpcmass.report.lx import (
    annulus_counts,
    aperture_radii,
    aperture_variants,
    background_per_pixel,
    beta_counts,
    energy_flux_per_count,
    counts_to_luminosity,
    disc_fraction,
    fit_power_law,
    iterate_mass,
    predict_by_fold,
)
from hpcmass.report.oracles import oracle_log_values
from hpcmass.report.stats import (
    aperture_error_growth,
    best_fold_by_validation,
    fold_statistics,
    gaussian_fit,
    mass_bias,
    quadrature_growth,
    scatter_percent,
)


def test_gaussian_fit_recovers_sigma_mu_within_bootstrap_errors():
    mu, sigma = -0.022, 0.051
    hits_mu = hits_sigma = covered_mu = 0
    trials = 40
    for t in range(trials):
        delta = np.random.default_rng(t).normal(mu, sigma, size=(80, 24))
        fit = gaussian_fit(delta, n_resamples=200, seed=t)
        # iid views: the cluster bootstrap must give the textbook standard errors
        assert fit.mu_err == pytest.approx(sigma / np.sqrt(delta.size), rel=0.3)
        assert fit.sigma_err == pytest.approx(sigma / np.sqrt(2 * delta.size), rel=0.3)
        hits_mu += abs(fit.mu - mu) < 2 * fit.mu_err
        hits_sigma += abs(fit.sigma - sigma) < 2 * fit.sigma_err
        # the 68% percentile interval of near-Gaussian estimates spans about +-1 standard error
        assert fit.sigma_hi - fit.sigma_lo == pytest.approx(2 * fit.sigma_err, rel=0.3)
        assert fit.mu_lo < fit.mu < fit.mu_hi
        covered_mu += fit.mu_lo <= mu <= fit.mu_hi
    # 2-sigma coverage is 95%, 68% intervals' 68%; 40 trials leave room for chance, not for a wrong estimator
    assert hits_mu >= 0.8 * trials and hits_sigma >= 0.8 * trials
    assert 0.45 * trials <= covered_mu <= 0.9 * trials


def test_bootstrap_resamples_clusters_not_views():
    # Views of one cluster share an offset: the mean is known only to ~sigma_c / sqrt(clusters).
    rng = np.random.default_rng(5)
    n_clusters, sigma_c, sigma_v = 100, 0.04, 0.01
    delta = rng.normal(0, sigma_c, (n_clusters, 1)) + rng.normal(0, sigma_v, (n_clusters, 24))
    fit = gaussian_fit(delta, n_resamples=400, seed=1)
    expect = np.sqrt(sigma_c**2 / n_clusters + sigma_v**2 / delta.size)
    assert fit.mu_err == pytest.approx(expect, rel=0.25)
    assert fit.n_clusters == n_clusters and fit.n_values == delta.size


def test_too_few_clusters_give_a_fit_without_an_interval():
    empty = gaussian_fit(np.zeros((0, 24)))
    assert empty.n_clusters == 0 and np.isnan(empty.sigma) and np.isnan(empty.sigma_lo)
    one = gaussian_fit(np.array([[0.1, -0.1]]))
    assert one.n_clusters == 1 and one.sigma == pytest.approx(0.1) and np.isnan(one.sigma_err)


def test_scatter_percent_matches_the_papers_conversion():
    assert scatter_percent(0.051) == pytest.approx(11.7, abs=0.15)
    assert scatter_percent(0.033) == pytest.approx(7.7, abs=0.15)


def test_fold_statistics_best_fold_subset_and_pull_to_the_mean():
    rng = np.random.default_rng(3)
    n = 200
    log_true = np.sort(rng.uniform(13.6, 15.0, n))
    fold = (np.arange(n) % 5).astype(np.int16)
    width = np.where(fold == 2, 0.02, 0.06)[:, None]
    pull = -0.2  # predictions pulled toward the mean mass
    pred = log_true[:, None] + pull * (log_true[:, None] - log_true.mean()) + rng.normal(0, 1, (n, 24)) * width
    # fold 2 has the lowest validation loss at its kept epoch (epochs count from 1)
    val_loss = np.array([[0.9, 0.5, 0.7]] * 5)
    val_loss[2, 2] = 0.1
    best = best_fold_by_validation(val_loss, np.array([2, 2, 3, 1, 2]))
    assert best == 2 and best_fold_by_validation(val_loss, np.array([2, 2, 1, 1, 2])) == 0
    s = fold_statistics(pred, log_true, fold, (14.0, 14.5), best, n_resamples=200)
    assert s.best_fold == 2
    in_subset = (log_true > 14.0) & (log_true < 14.5)
    assert s.best_subset.n_clusters == int((in_subset & (fold == 2)).sum())
    assert s.best_subset.sigma == pytest.approx(gaussian_fit((pred - log_true[:, None])[in_subset & (fold == 2)],
                                                             n_resamples=10).sigma)
    trend = pull * (log_true[fold == 2] - log_true.mean())
    assert s.per_fold[2].sigma == pytest.approx(np.hypot(0.02, trend.std()), rel=0.1)
    assert s.subset.n_clusters == int(((log_true > 14.0) & (log_true < 14.5)).sum())
    assert s.bias.slope == pytest.approx(pull, abs=3 * s.bias.slope_err)
    assert s.bias.slope_err < 0.02
    d = s.as_dict()
    assert d["best"]["sigma"] == s.per_fold[2].sigma and set(d["per_fold"]) == set(range(5))
    assert d["best_subset"]["sigma"] == s.best_subset.sigma and d["all"]["sigma_lo"] < d["all"]["sigma"]


def test_mass_bias_is_zero_for_unbiased_predictions():
    rng = np.random.default_rng(8)
    log_true = rng.uniform(13.6, 15.0, 150)
    b = mass_bias(log_true, rng.normal(0, 0.05, (150, 24)), n_resamples=200)
    assert abs(b.slope) < 3 * b.slope_err


def test_mass_bias_of_an_estimator_that_measured_few_clusters_is_still_reported():
    # An L_X that is positive for 3 of 30 clusters (the rest NaN): many resamples hold one of them or none.
    log_true = np.linspace(13.6, 15.0, 30)
    delta = np.full((30, 3), np.nan)
    delta[[2, 15, 27]] = [[0.1] * 3, [0.0] * 3, [-0.1] * 3]
    b = mass_bias(log_true, delta, n_resamples=200)
    assert b.slope == pytest.approx(np.polyfit(log_true[[2, 15, 27]], [0.1, 0.0, -0.1], 1)[0])
    assert np.isnan(b.slope_err)  # not every resample has a line: no error is claimed


def test_power_law_fit_recovers_slope_normalisation_and_scatter():
    rng = np.random.default_rng(11)
    log_l = rng.uniform(42.5, 45.0, 400)
    a, b, s = 14.3, 0.62, 0.06
    pivot = np.median(log_l)
    log_m = a + b * (log_l - pivot) + rng.normal(0, s, log_l.size)
    fit = fit_power_law(log_l, log_m)
    n = log_l.size
    slope_err = s / (np.std(log_l) * np.sqrt(n))
    assert fit.slope == pytest.approx(b, abs=4 * slope_err)
    assert fit.intercept == pytest.approx(a, abs=4 * s / np.sqrt(n))
    assert fit.scatter == pytest.approx(s, abs=4 * s / np.sqrt(2 * n))
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([1.0, 2.0], [1.0, np.nan])


def test_predict_by_fold_uses_only_training_clusters():
    rng = np.random.default_rng(2)
    n, k = 120, 4
    log_m = rng.uniform(13.6, 15.0, n)
    fold = np.arange(n) % k
    log_l = (log_m[:, None] - 14.3) / 0.6 + 43.5 + rng.normal(0, 0.1, (n, 3))
    poisoned = log_l.copy()
    poisoned[fold == 0] += 5.0  # fold 0's own L_X must not change fold 0's relation
    train_of = {j: fold != j for j in range(k)}
    pred, fits = predict_by_fold(poisoned, log_m, fold, train_of)
    clean, clean_fits = predict_by_fold(log_l, log_m, fold, train_of)
    assert not np.allclose(pred[fold != 0], clean[fold != 0])  # the other folds trained on fold 0
    # fold 0's relation is the clean one: its shifted L_X moves its masses along that relation only
    assert np.allclose(pred[fold == 0] - clean[fold == 0], fits[0].slope * 5.0, atol=1e-9)
    assert clean_fits[1].slope == pytest.approx(0.6, abs=0.05)
    assert np.std(clean - log_m[:, None]) == pytest.approx(0.06, rel=0.2)


def test_quadrature_growth_of_the_papers_lx_numbers():
    # 14.6% at 3% and 22.2% at 5%: 22.2^2 - 14.6^2 = 16 k^2 -> k = 4.18, s0^2 = 14.6^2 - 9 k^2 -> s0 = 7.47
    k, s0 = quadrature_growth(14.6, 22.2, 3.0, 5.0)
    assert k == pytest.approx(4.181, abs=1e-3) and s0 == pytest.approx(7.473, abs=1e-3)
    assert quadrature_growth(10.0, 9.0, 3.0, 5.0) == (0.0, 10.0)  # a larger error that narrows: no growth


def test_aperture_error_growth_recovers_the_added_scatter():
    # log M errors: an intrinsic 0.03 dex per cluster plus k% of scatter per % of aperture error
    rng = np.random.default_rng(4)
    n, k = 400, 2.0
    intrinsic = rng.normal(0, 0.03, (n, 3))
    draw = rng.standard_normal((n, 1))
    added = k * draw / (100 * np.log(10.0))  # percent scatter per percent error, in dex
    g = aperture_error_growth(intrinsic + added * 3, intrinsic + added * 5, 0.03, 0.05, n_resamples=200)
    half = (g["k_hi"] - g["k_lo"]) / 2  # about one standard error
    assert g["k_lo"] < g["k"] < g["k_hi"] and 0.02 < half < 0.3 and abs(g["k"] - k) < 3 * half
    assert g["s0_percent"] == pytest.approx(scatter_percent(0.03), rel=0.1)
    assert g["errors_percent"] == [3.0, 5.0] and g["n_clusters"] == n


def test_aperture_variants_and_their_radii():
    variants = aperture_variants((0.03, 0.05))
    assert [v.key for v in variants] == ["exact", "outer_0.03", "outer_0.05", "whole_0.03", "whole_0.05", "iterated"]
    by_key = {v.key: v for v in variants}
    # R500c = 100 px, an error draw of +1.5 sigma: a 4.5% larger R500c
    assert aperture_radii(by_key["exact"], 100.0, 1.5, 0.15, 1.0) == (15.0, 100.0)
    assert aperture_radii(by_key["outer_0.03"], 100.0, 1.5, 0.15, 1.0) == pytest.approx((15.0, 104.5))
    assert aperture_radii(by_key["whole_0.03"], 100.0, 1.5, 0.15, 1.0) == pytest.approx((15.675, 104.5))
    assert "whole aperture" in by_key["whole_0.05"].label and by_key["whole_0.05"].error == 0.05
    with pytest.raises(ValueError, match="iterated"):
        aperture_radii(by_key["iterated"], 100.0, 0.0, 0.15, 1.0)


def test_iterated_aperture_converges_to_the_analytic_fixed_point():
    # L_X within the aperture of R500c grows as R^s; the relation log M = a + b (log L - p); R^3 = K M
    s, log_a, a, b, p, log_k = 1.2, 40.0, 14.0, 0.6, 43.0, -8.0
    relation = lambda log_l: a + b * (log_l - p)  # noqa: E731
    r500_of = lambda log_m: 10.0 ** ((log_k + log_m) / 3.0)  # noqa: E731
    res = iterate_mass(lambda r: log_a + s * np.log10(r), relation, r500_of, 13.5)
    fixed = (a + b * (log_a + s / 3.0 * log_k - p)) / (1.0 - b * s / 3.0)
    assert res.converged and res.log_m == pytest.approx(fixed, abs=2e-4) and res.iterations < 15
    assert res.r500 == pytest.approx(r500_of(fixed), rel=1e-3)
    # an aperture with no net counts has no mass
    dark = iterate_mass(lambda r: np.nan, relation, r500_of, 13.5)
    assert not dark.converged and np.isnan(dark.log_m) and dark.iterations == 1


def test_oracles_are_the_logs_of_the_catalogs_gas_quantities():
    cols = {"mgas500_msun": np.array([1e13, 2e13, 0.0]), "tx_kev": np.array([2.0, 4.0, 3.0]),
            "lx_ce_erg_s": np.array([1e43, 2e43, 3e43])}
    logs = oracle_log_values(cols)
    assert set(logs) == {"mgas", "yx", "lx_ce"}  # no lx_ci column: left out
    assert logs["yx"][:2] == pytest.approx([np.log10(2e13), np.log10(8e13)])
    assert np.isnan(logs["mgas"][2]) and np.isnan(logs["yx"][2])
    assert oracle_log_values({"mgas500_msun": np.zeros(3)}) == {}  # nothing measured (toy clusters)


# --- aperture photometry on an analytic beta-model image ------------------------------------


def _beta_cumulative(r, s0, rc, beta):
    """Counts within projected radius r of S(R) = s0 (1 + R^2/rc^2)^(1/2 - 3 beta), by quadrature."""
    from scipy.integrate import quad

    return quad(lambda x: 2 * np.pi * x * s0 * (1 + (x / rc) ** 2) ** (0.5 - 3 * beta), 0, r)[0]


def test_beta_counts_is_the_integral_of_the_surface_brightness():
    for beta in (0.5, 0.6, 2 / 3, 0.9):
        assert beta_counts(40.0, 7.0, 5.0, beta) == pytest.approx(_beta_cumulative(40.0, 7.0, 5.0, beta), rel=1e-8)


def _beta_image(pixels, s0, rc, beta, bkg, sub=8):
    """Expected counts per pixel: the model integrated over each pixel (sub x sub points) plus background."""
    c = (pixels - 1) / 2.0
    f = (np.arange(pixels * sub) + 0.5) / sub - 0.5 - c
    xx, yy = np.meshgrid(f, f)
    s = s0 * (1 + (xx**2 + yy**2) / rc**2) ** (0.5 - 3 * beta)
    return s.reshape(pixels, sub, pixels, sub).mean(axis=(1, 3)) + bkg


def test_annulus_counts_of_a_beta_model_match_the_analytic_integral():
    p, s0, rc, beta, bkg, r500 = 128, 400.0, 6.0, 2 / 3, 3.0, 55.0
    model = _beta_image(p, s0, rc, beta, bkg)
    r_in, r_out = 0.15 * r500, 1.0 * r500
    exact = _beta_cumulative(r_out, s0, rc, beta) - _beta_cumulative(r_in, s0, rc, beta)
    ap = annulus_counts(model, r_in, r_out, bkg)
    assert ap.net_counts == pytest.approx(exact, rel=2e-3)
    assert ap.covered == pytest.approx(1.0, abs=1e-3)
    assert ap.background == pytest.approx(bkg * np.pi * (r_out**2 - r_in**2), rel=2e-3)
    noisy = np.random.default_rng(0).poisson(model)
    got = annulus_counts(noisy, r_in, r_out, bkg).net_counts
    assert abs(got - exact) < 4 * np.sqrt(exact + ap.background)
    # 5% larger outer radius: the analytic change, a small one for a beta = 2/3 profile
    wider = annulus_counts(model, r_in, 1.05 * r_out, bkg).net_counts
    assert wider - ap.net_counts == pytest.approx(
        _beta_cumulative(1.05 * r_out, s0, rc, beta) - _beta_cumulative(r_out, s0, rc, beta), rel=0.02)


def test_aperture_outside_the_image_reports_its_covered_fraction():
    p = 64
    assert disc_fraction(p, 20.0).sum() == pytest.approx(np.pi * 400, rel=1e-3)
    assert disc_fraction(p, 100.0).sum() == p * p
    ap = annulus_counts(np.ones((p, p)), 10.0, 60.0, 0.0, extrapolate=False)
    inside = (p * p - disc_fraction(p, 10.0).sum()) / (np.pi * (60**2 - 10**2))
    assert ap.covered == pytest.approx(inside, rel=1e-6) and ap.covered < 0.5
    assert ap.extrapolated == 0.0 and ap.net_counts == pytest.approx(p * p - disc_fraction(p, 10.0).sum())


def test_annulus_beyond_the_image_is_completed_with_a_fitted_beta_model():
    # R500c larger than the half-field, as for every cluster in a 20' field at z = 0.05
    p, s0, rc, beta, bkg, r500 = 128, 300.0, 9.0, 0.62, 2.0, 110.0
    model = _beta_image(p, s0, rc, beta, bkg)
    r_in, r_out = 0.15 * r500, r500
    exact = _beta_cumulative(r_out, s0, rc, beta) - _beta_cumulative(r_in, s0, rc, beta)
    ap = annulus_counts(model, r_in, r_out, bkg)
    assert 0.4 < ap.covered < 0.8 and ap.extrapolated > 0.1 * exact
    assert ap.net_counts == pytest.approx(exact, rel=0.01)
    clipped = annulus_counts(model, r_in, r_out, bkg, extrapolate=False).net_counts
    assert clipped < 0.9 * exact
    noisy = annulus_counts(np.random.default_rng(4).poisson(model).astype(float), r_in, r_out, bkg)
    assert noisy.net_counts == pytest.approx(exact, rel=0.05)
    # the 5% aperture error now acts on the whole annulus, as it would on a wide-field image
    wider = annulus_counts(model, r_in, 1.05 * r_out, bkg).net_counts
    assert wider - ap.net_counts == pytest.approx(
        _beta_cumulative(1.05 * r_out, s0, rc, beta) - _beta_cumulative(r_out, s0, rc, beta), rel=0.05)


def test_an_exposure_map_restores_the_counts_off_the_chips():
    # ACIS-I-like: the 20' field's corners and a cross of 3-pixel gaps seen for none of the exposure, an edge
    # strip for half of it (dither); the same beta cluster as above, R500c beyond the half-field.
    p, s0, rc, beta, bkg, r500 = 128, 300.0, 9.0, 0.62, 2.0, 110.0
    seen = np.zeros((p, p))
    seen[10:118, 10:118] = 1.0
    seen[8:10, 8:120] = seen[118:120, 8:120] = seen[8:120, 8:10] = seen[8:120, 118:120] = 0.5
    seen[60:63, :] = seen[:, 66:69] = 0.0
    model = _beta_image(p, s0, rc, beta, bkg) * seen
    r_in, r_out = 0.15 * r500, r500
    exact = _beta_cumulative(r_out, s0, rc, beta) - _beta_cumulative(r_in, s0, rc, beta)
    ap = annulus_counts(model, r_in, r_out, bkg, seen=seen)
    assert ap.net_counts == pytest.approx(exact, rel=0.01)
    assert ap.background == pytest.approx(bkg * (seen * (disc_fraction(p, r_out) - disc_fraction(p, r_in))).sum())
    # without it, the background is taken off where no count could fall and the fit sees a steeper profile
    assert annulus_counts(model, r_in, r_out, bkg).net_counts < 0.8 * exact
    # the paper's full field: an exposure map of ones changes nothing
    full = _beta_image(p, s0, rc, beta, bkg)
    assert annulus_counts(full, r_in, r_out, bkg, seen=np.ones((p, p))).net_counts == pytest.approx(
        annulus_counts(full, r_in, r_out, bkg).net_counts, rel=1e-9)


def test_energy_flux_per_count_and_background_level():
    flat = energy_flux_per_count(lambda e: np.full_like(e, 100.0), 0.5, 7.0, kt_kev=5.0)
    e = np.linspace(0.5, 7.0, 4000)
    mean_e = np.trapezoid(np.exp(-e / 5), e) / np.trapezoid(np.exp(-e / 5) / e, e)
    assert flat == pytest.approx(mean_e * 1.602176634e-9 / 100.0, rel=1e-6)
    assert background_per_pixel(2.4e-3, 1e5, 9.375) == pytest.approx(2.4e-3 * 1e5 * (9.375 / 60) ** 2)


def test_counts_to_luminosity_scales_with_distance_squared_and_exposure():
    l1 = counts_to_luminosity(1000.0, 1e5, 2e-11, 1e27)
    assert l1 == pytest.approx(4 * np.pi * 1e54 * 1e-2 * 2e-11)
    assert counts_to_luminosity(1000.0, 2e5, 2e-11, 2e27) == pytest.approx(2 * l1)


# --- the observe stage's response files ----------------------------------------------------------


def _ogip_files(directory, rate_per_channel):
    from astropy.io import fits

    e = np.arange(0.0, 10.01, 0.5)  # 20 channels of 0.5 keV
    arf = fits.BinTableHDU.from_columns([fits.Column(name="ENERG_LO", format="E", array=e[:-1]),
                                         fits.Column(name="ENERG_HI", format="E", array=e[1:]),
                                         fits.Column(name="SPECRESP", format="E", array=np.full(20, 250.0))])
    arf.name = "SPECRESP"
    fits.HDUList([fits.PrimaryHDU(), arf]).writeto(directory / "a.arf")
    eb = fits.BinTableHDU.from_columns([fits.Column(name="CHANNEL", format="J", array=np.arange(1, 21)),
                                        fits.Column(name="E_MIN", format="E", array=e[:-1]),
                                        fits.Column(name="E_MAX", format="E", array=e[1:])])
    eb.name = "EBOUNDS"
    fits.HDUList([fits.PrimaryHDU(), eb]).writeto(directory / "a.rmf")
    sp = fits.BinTableHDU.from_columns([fits.Column(name="CHANNEL", format="J", array=np.arange(1, 21)),
                                        fits.Column(name="COUNT_RATE", format="E", array=rate_per_channel)])
    sp.name = "SPECTRUM"
    fits.HDUList([fits.PrimaryHDU(), sp]).writeto(directory / "b.pha")


def test_response_files_give_the_band_background_and_effective_area(tmp_path):
    import json

    from hpcmass.errors import StageError
    from hpcmass.report.response import background_rate, effective_area, observe_response

    _ogip_files(tmp_path, np.arange(20, dtype=float))
    files = {"mode": "approximate", "soxs_data_dir": "/nowhere", "arf": "a.arf", "rmf": "a.rmf",
             "bkgnd": "b.pha", "foreground": False}
    attrs = {"data_files": json.dumps(files), "instrument": json.dumps({"bkgnd": ["b.pha", 2.0]})}
    # an approximate-mode directory that moved with its workdir is found again
    resp = observe_response(attrs, tmp_path)
    # channels 2..14 (0-based 1..13) lie inside 0.5-7 keV; the PHA is normalised to 2 arcmin^2
    assert background_rate(resp, 0.5, 7.0) == pytest.approx(np.arange(1, 14).sum() / 2.0)
    assert effective_area(resp.arf)(np.array([1.0, 6.0, 20.0])) == pytest.approx([250.0, 250.0, 0.0])
    with pytest.raises(StageError, match="response file is missing"):
        observe_response({**attrs, "data_files": json.dumps({**files, "mode": "soxs"})}, tmp_path)
    with pytest.raises(StageError, match="recorded no data_files"):
        observe_response({}, tmp_path)


def test_a_soft_channel_from_the_approximate_table_is_flagged_with_the_measured_shares():
    from hpcmass.report.html import soft_band_note

    note = soft_band_note(((0.5, 1.2), (1.2, 2.5), (2.5, 7.0)))
    assert "29%, 65%, 79%, 89% of the 0.5–1.2 keV counts at kT = 1, 2, 3, 5 keV" in note
    assert "soft channel (0.5–1.2 keV)" in note
    assert soft_band_note(((0.5, 7.0),)) == "" and soft_band_note(((0.5, 2.0), (2.0, 7.0))) == ""
