"""The domain checks' statistics (hpcmass/predict/checks.py) on images whose answer is known: a flat Poisson
background (the null), a β-model cluster, point sources, fields cut short, thinned exposures; and the
verdicts they give against a model's thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcmass.predict import checks

P = 128
BACKGROUND = 5.9  # counts per pixel: the approximate ACIS-I's blank sky, 0.5-7 keV, 100 ks, 9.4" pixels (measured)


def sky(rng, *, background=BACKGROUND, cluster_counts=0.0, core_px=6.0, point=None, bands=1, exposure=1.0):
    """Poisson counts ``(bands, P, P)``: flat background, optionally a β = 2/3 cluster at the centre (to 10 cores)
    and a point source ``(counts, x, y)`` (pixel offsets from the centre) in one pixel; the first two observed
    for ``exposure`` (a map ``(P, P)`` of fractions of the full exposure)."""
    c = np.arange(P) - (P - 1) / 2.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    beta = (1 + (xx ** 2 + yy ** 2) / core_px ** 2) ** -1.5
    mu = (background + cluster_counts * beta / beta.sum()) * exposure
    img = rng.poisson(np.broadcast_to(mu / bands, (bands, P, P))).astype(np.int32)
    if point is not None:
        n, x, y = point
        img[0, int(round(y + (P - 1) / 2.0)), int(round(x + (P - 1) / 2.0))] += n
    return img


def test_field_coverage_counts_the_cells_holding_events():
    rng = np.random.default_rng(0)
    full = sky(rng)
    assert checks.field_coverage(full) == 1.0 and checks.covered_cells(full).shape == (16, 16)
    quarter = np.zeros_like(full)
    quarter[:, 32:96, 32:96] = full[:, 32:96, 32:96]  # a 10' box of the 20' field, centred
    assert checks.field_coverage(quarter) == 0.25
    assert checks.field_coverage(checks.cut_strip(full, 0.25)) == 0.75  # 32 rows = 4 of 16 cell rows
    assert checks.field_coverage(np.zeros_like(full)) == 0.0
    # A field not a multiple of 16 pixels, and one smaller than 16: cells of unequal or single pixels.
    assert checks.field_coverage(np.ones((2, 50, 50))) == 1.0
    assert checks.covered_cells(np.ones((1, 8, 8))).shape == (8, 8)


def test_extended_significance_is_a_unit_null_on_flat_sky_whatever_its_level():
    ap = checks.apertures(P)
    assert (ap.r_in, ap.r_out, ap.r_bkg) == pytest.approx((3.2, 19.2, 51.2))  # 0.5', 3', 8' of the 20' field
    for background in (BACKGROUND, 0.6):  # a tenth of the mocks' background: the statistic is in sigma units
        rng = np.random.default_rng(1)
        s = np.array([checks.extended_significance(sky(rng, background=background), ap) for _ in range(300)])
        # Median of 8 sector means: sd sqrt(pi/2) ~ 1.25 of the Poisson error, less the background's share.
        assert abs(s.mean()) < 0.2 and 0.95 < s.std() < 1.4, (background, s.mean(), s.std())


def test_extended_significance_finds_a_cluster_not_a_point_source():
    ap = checks.apertures(P)
    rng = np.random.default_rng(2)
    # 3000 counts in a 1' core on 97,000 background counts: a faint group at 100 ks.
    groups = [checks.extended_significance(sky(rng, cluster_counts=3000.0), ap) for _ in range(20)]
    assert min(groups) > 8.0
    # 20,000 counts in one pixel: at the centre (the X-ray peak) it is inside the annulus' hole; off the centre it
    # falls in one of the 8 sectors, and the median ignores it.
    for x, y in ((0.5, 0.5), (10.0, 3.0), (60.0, 60.0)):
        s = checks.extended_significance(sky(rng, point=(20_000, x, y)), ap)
        assert abs(s) < 4.0, (x, y, s)
    # Several bands are summed.
    assert checks.extended_significance(sky(rng, cluster_counts=3000.0, bands=3), ap) > 8.0


def mean_null(seed: int, spoil) -> float:
    """The mean extended-emission significance of 100 flat skies, each changed in place by ``spoil(img, rng)``."""
    ap, rng = checks.apertures(P), np.random.default_rng(seed)
    s = []
    for _ in range(100):
        img = sky(rng)
        spoil(img, rng)
        s.append(checks.extended_significance(img, ap))
    return float(np.mean(s))


def test_point_sources_in_the_outskirts_do_not_raise_the_background():
    def six_point_sources(img, rng):  # in the outskirts (r > 51 px), 300 counts each
        for x, y in rng.uniform(40, 63, (6, 2)) * rng.choice([-1, 1], (6, 2)):
            img[0, int(y + 63.5), int(x + 63.5)] += 300

    assert abs(mean_null(6, six_point_sources)) < 0.3  # unclipped, their 1800 counts pull it to -3.0 (measured)


def test_extended_significance_ignores_the_partly_covered_edge_of_the_footprint():
    def past_the_edge(img, rng):  # the field runs 3 pixels (less than a cell) past the detector's edge
        img[..., :, :3] = 0

    assert abs(mean_null(3, past_the_edge)) < 0.3
    assert math.isnan(checks.extended_significance(np.zeros((1, P, P)), checks.apertures(P)))


def gapped_exposure() -> np.ndarray:
    """An exposure map ``(P, P)`` like ACIS-I's: gaps 2 pixels wide crossing 5 pixels from the centre (through
    the annulus, 3.2-19.2 pixels), the detector's edge dithered over 3 pixels, the field's first 10 columns off
    it."""
    e = np.ones((P, P))
    e[:, 68:70] = e[68:70, :] = 0.0
    e[:, :10] = 0.0
    e[:, 10:13] = [0.25, 0.5, 0.75]
    return e


def test_field_coverage_from_an_exposure_map_counts_the_exposed_cells():
    e = gapped_exposure()
    # The first cell column (8 pixels) is off the detector, the second half exposed; the gaps empty no cell.
    assert checks.field_coverage(np.zeros((1, P, P)), e) == 15 / 16
    edge = np.zeros((P, P))
    edge[:, 7] = 0.04  # one of a cell's 8 columns at 4%: its mean, 0.5%, is just covered
    assert checks.covered_cells(None, edge)[:, 0].all() and not checks.covered_cells(None, edge * 0.99).any()


def test_the_exposure_corrected_statistic_is_the_counts_one_where_the_field_is_whole():
    rng = np.random.default_rng(8)
    ap = checks.apertures(P)
    for img in (sky(rng), sky(rng, cluster_counts=3000.0), checks.cut_strip(sky(rng)[None], 0.1)[0]):
        # The counts statistic weighs the inner cells fully and the rest not at all: as that exposure map.
        inner = np.repeat(np.repeat(checks._inner_cells(img), 8, axis=0), 8, axis=1).astype(float)
        counts = checks.extended_significance(img, ap)
        assert checks.extended_significance(img, ap, inner) == pytest.approx(counts, rel=1e-12)
        assert checks.extended_significance(img, ap, 0.37 * inner) == pytest.approx(counts, rel=1e-12)


def test_chip_gaps_in_the_annulus_read_as_missing_emission_unless_corrected_for_exposure():
    e, ap = gapped_exposure(), checks.apertures(P)
    rng = np.random.default_rng(7)
    for cluster_counts in (0.0, 3000.0):
        whole, counts, corrected = [], [], []
        for _ in range(100):
            whole.append(checks.extended_significance(sky(rng, cluster_counts=cluster_counts), ap))
            gapped = sky(rng, cluster_counts=cluster_counts, exposure=e)
            counts.append(checks.extended_significance(gapped, ap))
            corrected.append(checks.extended_significance(gapped, ap, e))
        whole, counts, corrected = np.array(whole), np.array(counts), np.array(corrected)
        if cluster_counts == 0.0:
            # Blank sky: the gaps pull the counts statistic 9 sigma low (measured -8.9 on 200 fields); corrected,
            # it is the unit null of a whole field.
            assert counts.mean() < -6.0 and abs(corrected.mean()) < 0.3 and 0.9 < corrected.std() < 1.4
        else:
            # The faint group (20 sigma on a whole field) falls to 6.5 sigma counted, stays at 18.5 corrected
            # (measured; the gaps take 4% of the annulus' exposure away).
            assert counts.mean() < 0.5 * whole.mean() and corrected.mean() > 0.85 * whole.mean()


def test_thinning_keeps_each_count_with_the_exposure_fraction():
    rng = np.random.default_rng(4)
    img = sky(rng, cluster_counts=20_000.0)
    thin = checks.thin(img, 0.4, np.random.default_rng(5))
    assert thin.dtype == np.int32 and (thin <= img).all()
    n = img.sum()
    assert abs(thin.sum() - 0.4 * n) < 4 * math.sqrt(n * 0.4 * 0.6)
    np.testing.assert_array_equal(checks.thin(img, 1.0, rng), img)
    cut = checks.cut_strip(img[None], 0.1)
    assert (cut[..., :13, :] == 0).all() and (cut[..., 13:, :] == img[..., 13:, :]).all()


DOMAIN = {
    "exposure": {"training_ks": 100.0, "min_fraction": 0.25,
                 "levels": [{"fraction": f, "half_width": h} for f, h in ((1.0, 0.06), (0.8, 0.12), (0.25, 0.3))]},
    "coverage": {"refuse_below": 0.8, "training_min": 0.98, "max_coverage_drop": 0.05},
    "detection": {"threshold_sigma": 6.4, "exposure_map": {"threshold_sigma": 5.1}},
}


def test_exposure_verdicts_thin_widen_or_refuse():
    v, keep, scale, h = checks.exposure_verdict(2e5, DOMAIN)
    assert (v.verdict, keep, scale, h) == ("ok", 0.5, None, 0.06) and "thinned to 100 ks" in v.reason
    v, keep, scale, h = checks.exposure_verdict(1e5, DOMAIN)
    assert (v.verdict, keep, h) == ("ok", 1.0, 0.06) and "widened" not in v.reason
    v, keep, scale, h = checks.exposure_verdict(9e4, DOMAIN)
    assert v.verdict == "ok" and h == pytest.approx(0.09) and "interval widened to ±0.090 dex" in v.reason
    v, keep, scale, h = checks.exposure_verdict(2e4, DOMAIN)
    assert v.verdict == "refuse" and v.value == pytest.approx(0.2) and "calibrated down to 0.25" in v.reason
    v, keep, scale, h = checks.exposure_verdict(0.0, DOMAIN)
    assert (v.verdict, v.value, keep, scale, h) == ("warn", None, 1.0, None, 0.06) and "no EXPOSURE" in v.reason


#: A model trained on 25-100 ks scaled to 50 ks, its held-out interval calibrated in three exposure bins.
RANGED = {**DOMAIN, "exposure": {"training_ks": 50.0, "range_ks": [25.0, 100.0], "min_fraction": 0.5,
                                 "levels": [{"fraction": f, "half_width": h}
                                            for f, h in ((0.6, 0.12), (1.0, 0.08), (1.6, 0.06))]}}


def test_a_model_of_an_exposure_range_scales_the_counts_within_it_and_refuses_below():
    v, keep, scale, h = checks.exposure_verdict(4e4, RANGED)  # 40 ks: between the first two bins
    assert (v.verdict, keep, scale) == ("ok", 1.0, 40.0) and h == pytest.approx(0.10)
    assert "counts scaled to 50 ks" in v.reason
    v, keep, scale, h = checks.exposure_verdict(2e5, RANGED)  # longer than the range: thinned to its longest
    assert (v.verdict, keep, scale, h) == ("ok", 0.5, 100.0, 0.06) and "thinned to 100 ks" in v.reason
    v, keep, scale, h = checks.exposure_verdict(2e4, RANGED)
    assert (v.verdict, keep, scale) == ("refuse", 1.0, None) and "shorter than any training observation" in v.reason
    # what the models see: the kept counts times 50 / 40, as the training images were scaled
    from hpcmass.predict.cli import checked_image
    from hpcmass.predict.events import Binned

    counts = np.random.default_rng(3).poisson(4.0, (1, 32, 32)).astype(np.int32)
    checked, image, verdicts, h = checked_image(Binned(counts, (0.0, 0.0), "peak", 4e4), RANGED)
    assert checked is counts and image.dtype == np.float32 and h == pytest.approx(0.10)
    np.testing.assert_allclose(image, counts * 1.25)
    assert [v.check for v in verdicts] == ["exposure", "coverage", "cluster"]


def test_coverage_and_cluster_verdicts_and_the_worst_of_them():
    cov = [checks.coverage_verdict(c, DOMAIN) for c in (1.0, 0.9, 0.25)]
    assert [v.verdict for v in cov] == ["ok", "warn", "refuse"]
    assert cov[2].reason == "25% of the field's cells hold events; below 80% the held-out interval's coverage drops " \
                            "by more than 5 points"
    det = [checks.cluster_verdict(s, checks.detection_for(DOMAIN, False)) for s in (30.0, 2.0, math.nan)]
    assert [v.verdict for v in det] == ["ok", "refuse", "refuse"]
    assert det[1].reason.startswith("no cluster detected: extended emission at 2.0 (threshold 6.4")
    # With an exposure map: the exposure-corrected statistic's own threshold; none for a model exported before.
    exposed = checks.cluster_verdict(6.0, checks.detection_for(DOMAIN, True), exposure_map=True)
    assert exposed.verdict == "ok"
    assert exposed.reason.endswith("(threshold 5.1, from blank-sky mocks; exposure-corrected)")
    assert checks.detection_for({"detection": {"threshold_sigma": 6.4}}, True) is None
    assert checks.coverage_verdict(0.9, DOMAIN, exposure_map=True).reason.startswith("90% of the field's cells exposed")
    assert checks.worst(cov[:2]) == "warn" and checks.worst(cov + det) == "refuse" and checks.worst(det[:1]) == "ok"


def test_feature_distance_is_the_squared_mahalanobis_distance_averaged_over_views():
    rng = np.random.default_rng(3)
    cov = np.array([[4.0, 1.2, 0.0], [1.2, 1.0, 0.0], [0.0, 0.0, 0.25]])
    train = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=20_000)
    mean, precision = checks.feature_reference(train)
    np.testing.assert_allclose(mean, [1.0, -2.0, 0.5], atol=0.03)
    np.testing.assert_allclose(np.linalg.inv(precision), cov + 1e-3 * np.trace(cov) / 3 * np.eye(3), rtol=0.03,
                               atol=0.03)
    # Unseen draws of the same distribution: chi-squared with 3 degrees of freedom, mean 3, per view.
    views = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=(4000, 8))
    d = checks.feature_distance(views, mean, precision)
    assert d.shape == (4000,) and np.mean(d) == pytest.approx(3.0, rel=0.02)
    assert np.var(d) == pytest.approx(2 * 3 / 8, rel=0.08)  # the mean of 8 chi2(3): variance 6/8
    # One standard deviation along the third axis, in every view: distance 1.
    shifted = np.broadcast_to(mean + [0.0, 0.0, 0.5], (8, 3))
    assert checks.feature_distance(shifted, mean, precision) == pytest.approx(1.0, rel=0.03)


def test_a_dead_unit_keeps_the_reference_invertible_and_weighs_an_image_that_wakes_it():
    rng = np.random.default_rng(4)
    train = np.column_stack([rng.normal(size=500), rng.normal(size=500), np.zeros(500)])  # unit 3 never fires
    mean, precision = checks.feature_reference(train)
    assert np.isfinite(precision).all()
    woken = checks.feature_distance(np.array([[0.0, 0.0, 0.1]]), mean, precision)
    # 0.1 of a unit whose variance is the ridge alone, 1e-3 of the mean variance (2/3): 0.01 / 6.7e-4 = 15.
    assert woken == pytest.approx(15.0, rel=0.1)


OOD_DOMAIN = {"ood": {"warn_above": 30.0, "level": 0.95}}


def test_ood_verdicts_rank_the_image_against_held_out_mocks_and_only_warn():
    held = np.arange(1.0, 101.0) * 0.3  # held-out scores 0.3 ... 30
    ok = checks.ood_verdict(15.1, OOD_DOMAIN, held)
    assert (ok.check, ok.verdict, ok.value) == ("ood", "ok", 15.1)
    assert "farther than 50% of held-out mocks; warned above 30, their 95% quantile" in ok.reason
    far = checks.ood_verdict(120.0, OOD_DOMAIN, held)
    assert far.verdict == "warn" and far.reason.startswith("unlike the training images: penultimate features at 120")
    assert "farther than 100% of held-out mocks" in far.reason
    old = checks.ood_verdict(None, {}, None)
    assert old.verdict == "warn" and old.value is None and "exported before this check existed" in old.reason
