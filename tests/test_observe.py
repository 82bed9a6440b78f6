"""The observe stage's science, in-process with real yt, pyXSIM and SOXS on tiny controlled cutouts.

Everything runs in the approximate data mode (no network here); the checks compare SOXS's output
with what the response, background and absorption files themselves predict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from observe_cutouts import write_cutout

from hpcmass import images
from hpcmass.observe import approx, imaging, simulate, xray
from hpcmass.params import load_params

ROOT = Path(__file__).resolve().parents[1]
CENTER = (1000.0, 2000.0, 3000.0)


@pytest.fixture(scope="module")
def xray_data(tmp_path_factory):
    """Approximate data files, SOXS imported with a private config directory (not $HOME)."""
    d = tmp_path_factory.mktemp("observe")
    p = load_params(ROOT / "params/ci.yaml")
    data = xray.resolve_data(p.observe, d / "approx", d / "config")
    assert data.mode == "approximate" and not data.foreground
    xray.import_soxs(data, d / "config")  # before anything else imports soxs
    approx.write_approx_files(d / "approx")
    return data


@pytest.fixture(scope="module")
def cutouts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cutouts")
    for kind in ("relaxed", "cold", "starforming"):
        write_cutout(d / f"{kind}.hdf5", kind=kind, n_cells=15_000, center=CENTER)
    # a compact, bright one for the centring test, across the box's periodic boundary
    write_cutout(d / "compact.hdf5", n_cells=15_000, rc_kpc=30.0, m_gas_msun=3e13, center=(20.0, 204_990.0, 5.0))
    return d


def observe(xray_data, tmp_path, cutout, *overrides, center=CENTER, events=False):
    p = load_params(ROOT / "params/ci.yaml", list(overrides))
    instrument = xray.register_instrument(p.observe, xray_data)
    setup = simulate.Setup(p.observe, xray_data, instrument, xray.arf_peak_area(xray_data), p.run.seed)
    with simulate.quiet_libraries():
        return simulate.observe_cluster(cutout, center, 700.0, 3, setup, tmp_path / "scratch",
                                        tmp_path / "events" if events else None), p.observe


def band_background_counts(data, observe) -> float:
    """Particle-background counts expected in the band, from the PHA and the RMF's channel energies."""
    from astropy.io import fits

    d = Path(data.soxs_data_dir)
    with fits.open(d / data.rmf) as h:
        lo, hi = (np.asarray(h["EBOUNDS"].data[c], float) for c in ("E_MIN", "E_MAX"))
    with fits.open(d / data.bkgnd) as h:
        rate = np.asarray(h["SPECTRUM"].data["COUNT_RATE"], float)  # per arcmin^2
    inside = np.clip((np.minimum(hi, observe.emax_kev) - np.maximum(lo, observe.emin_kev)) / (hi - lo), 0, 1)
    return float((rate * inside).sum() * observe.exposure_ks * 1e3 * observe.fov_arcmin**2)


# --- imaging: the event -> image rule ------------------------------------------------------------


def test_binning_rule_field_band_and_orientation():
    # 2400 sky pixels of 0.5" centred on pixel 2400.5: the paper's 20' field.
    pix = 0.5 / 3600
    x = np.array([2400.5 - 1199.9, 2400.5 + 1199.9, 2400.5 + 0.1, 2400.5 + 0.1, 2400.5 - 1200.2, 2400.5])
    y = np.array([2400.5 - 1199.9, 2400.5 - 1199.9, 2400.5 + 0.1, 2400.5 + 0.1, 2400.5, 2400.5])
    e = np.array([1.0, 1.0, 0.5, 6.999, 1.0, 7.0])  # 7.0 keV is outside [0.5, 7)
    geometry = dict(center=(2400.5, 2400.5), pixel_deg=pix, fov_arcmin=20.0, pixels=128)
    im = imaging.bin_image(x, y, e, **geometry, bands=((0.5, 7.0),))
    assert im.dtype == np.int32 and im.shape == (1, 128, 128) and im.sum() == 4  # one left of the field, one 7 keV
    # two bands split the same image at 1 keV: lo <= E < hi
    two = imaging.bin_image(x, y, e, **geometry, bands=((0.5, 1.0), (1.0, 7.0)))
    assert two.shape == (2, 128, 128) and np.array_equal(two.sum(axis=0), im[0])
    assert two[0, 64, 64] == 1 and two[1, 64, 64] == 1 and two[1, 0, 0] == 1 and two[0].sum() == 1
    im = im[0]
    assert im[0, 0] == 1 and im[0, 127] == 1  # rows follow Y, columns X
    assert im[64, 64] == 2  # just above the centre: the upper-right of the central 2x2
    assert images.pixel_arcsec(20.0, 128) == pytest.approx(9.375)


def test_event_file_binning_recovers_a_sky_position(tmp_path):
    from astropy.io import fits

    # A Chandra-like event file: 0.492" pixels, tangent point at pixel 4096.5; events at one RA/Dec.
    ra0, dec0, pix = 150.0, 2.0, 0.492 / 3600
    ev = imaging.Events(np.zeros(1), np.zeros(1), np.zeros(1), (4096.5, 4096.5), (ra0, dec0), pix, 1.0)
    x, y = ev.sky_to_pixel(ra0 + 0.05 / np.cos(np.deg2rad(dec0)), dec0 + 0.02)
    cols = [fits.Column(name="X", format="D", array=np.full(5, x)), fits.Column(name="Y", format="D", array=np.full(5, y)),
            fits.Column(name="ENERGY", format="E", unit="eV", array=np.full(5, 1500.0))]
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.name = "EVENTS"
    hdu.header.update({"TCRPX1": 4096.5, "TCRPX2": 4096.5, "TCRVL1": ra0, "TCRVL2": dec0, "TCDLT1": -pix,
                       "TCDLT2": pix, "EXPOSURE": 1e4})
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "evt.fits")
    im = imaging.image_from_event_file(tmp_path / "evt.fits", center_radec=(ra0 + 0.05 / np.cos(np.deg2rad(dec0)),
                                                                          dec0 + 0.02))
    assert im.shape == (1, 128, 128) and im.sum() == 5 and im[0, 63:65, 63:65].sum() == 5  # centred on the events
    im = imaging.image_from_event_file(tmp_path / "evt.fits")[0]  # about the tangent point
    row, col = np.unravel_index(im.argmax(), im.shape)
    image_pixel = 9.375 / 0.492  # sky pixels per image pixel
    assert x < 4096.5 < y  # east (larger RA) is to the left, north up
    assert (row, col) == (64 + np.floor((y - 4096.5) / image_pixel), 64 + np.floor((x - 4096.5) / image_pixel))


# --- which data -----------------------------------------------------------------------------------


def test_data_mode_needs_files_that_pass_soxs_hash_check(tmp_path):
    from hpcmass.errors import StageError

    staged = tmp_path / "soxs"
    staged.mkdir()
    auto = load_params(None, [f"observe.data_dir={staged}"])
    files = xray.table_files(auto.observe)
    assert files == ["apec_v3.1.3_coco.fits", "apec_v3.1.3_line.fits", "acisi_aimpt_cy22.arf", "acisi_aimpt_cy22.rmf",
                     "chandra_acisi_cy22_particle_bkgnd.pha"]
    for name in files:
        (staged / name).write_bytes(b"not SOXS's file")  # present, but the sha256 does not match
    assert xray.missing_soxs_files(staged, files) == files
    data = xray.resolve_data(auto.observe, tmp_path / "approx", tmp_path / "config")
    assert data.mode == "approximate" and not data.foreground and "APPROXIMATION" in data.describe()
    assert data.staged_dir is None and data.response_dir == data.soxs_data_dir == str(tmp_path / "approx")
    with pytest.raises(StageError, match=r"observe.data=soxs needs .* fail SOXS's hash check; run `hpcmass stage-data`"):
        xray.resolve_data(load_params(None, [f"observe.data_dir={staged}", "observe.data=soxs"]).observe, tmp_path,
                          tmp_path / "config")
    assert xray.instrument_spec(auto.observe, data) == {
        "name": xray.instrument_spec(auto.observe, data)["name"], "arf": approx.ARF_NAME, "rmf": approx.RMF_NAME,
        "bkgnd": [approx.BKGND_NAME, 1.0], "fov": 20.0, "num_pixels": 2400, "aimpt_coords": [0.0, 0.0],
        "chips": [["Box", 0, 0, 2400, 2400]], "focal_length": 10.0, "dither": False, "psf": ["gaussian", 0.5],
        "imaging": True, "grating": False}


def test_a_soxs_instrument_needs_its_own_files_staged_and_must_image(tmp_path):
    """SOXS's registry instruments: which files each reads, and one-line refusals of what cannot be used."""
    from hpcmass.errors import StageError

    acisi = load_params(None, ["observe.instrument=chandra_acisi_cy22", f"observe.data_dir={tmp_path / 'none'}"])
    # Its response comes with the instrument, so the data mode needs only the APEC tables.
    assert xray.table_files(acisi.observe) == ["apec_v3.1.3_coco.fits", "apec_v3.1.3_line.fits"]
    with pytest.raises(StageError) as err:
        xray.resolve_data(acisi.observe, tmp_path / "approx", tmp_path / "config")
    assert str(err.value) == (
        f"observe.instrument=chandra_acisi_cy22 needs SOXS's files acisi_aimpt_cy22.arf, acisi_aimpt_cy22.rmf, "
        f"chandra_acisi_cy22_particle_bkgnd.pha, chandra_psf.fits in observe.data_dir={tmp_path / 'none'} (missing or "
        f"failing SOXS's hash check); run `hpcmass stage-data` with these params on a machine with network access, "
        f"and copy {tmp_path / 'none'} here if that is another one")
    spec = xray.registry_instrument("axis", tmp_path, tmp_path / "config")
    assert xray.instrument_files(spec, particle_background=False) == ["axis_onaxis_20230701.arf", "axis_ccd_20221101.rmf",
                                                                     "AXIS_EEF_2023-07-01.fits"]
    assert len(spec["chips"]) == 4  # four CCDs with gaps between them
    star_x = xray.registry_instrument("star-x", tmp_path, tmp_path / "config")  # Gaussian PSF, no background
    assert xray.instrument_files(star_x, particle_background=True) == ["starx_2020-11-26_fov_avg.arf", "starx.rmf"]
    for name, why in (("chandra_hrc", "not in SOXS 5.3.0's registry"),
                      ("chandra_aciss_meg_p1_cy22", "a grating spectrometer, not an imager"),
                      ("chandra_aciss_cy22", "its particle background differs from chip to chip")):
        with pytest.raises(StageError) as err:
            xray.registry_instrument(name, tmp_path, tmp_path / "config")
        assert str(err.value).startswith(f"observe.instrument={name}: {why}")
        usable = str(err.value).split("; expected simple_acisi (the paper's simplified ACIS-I) or one of ")[1].split(", ")
        assert {"chandra_acisi_cy22", "axis", "lynx_hdxi", "athena_wfi", "xrism_xtend"} <= set(usable)
        assert not {"chandra_aciss_cy22", "chandra_aciss_meg_p1_cy22"} & set(usable)
    resolve = load_params(None, ["observe.instrument=xrism_resolve"])
    with pytest.raises(StageError, match=r"xrism_resolve: its 30\" pixels are coarser than the image's 9.375\""):
        xray.resolve_data(resolve.observe, tmp_path / "approx", tmp_path / "config")


# --- the approximate data files ------------------------------------------------------------------


def test_approximate_table_read_back_by_soxs(xray_data):
    """SOXS's own APEC reader sees the free-free continuum we wrote, and metals scale linearly."""
    import soxs
    from scipy.special import k0e

    gen = soxs.ApecGenerator(0.5, 7.0, 650, apec_vers=xray_data.apec_version, broadening=False)
    kt = 8.0
    s0, s1, s3 = (gen.get_spectrum(kt, z, 0.0, 1e-14) for z in (0.0, 1.0, 3.0))  # norm 1e-14: the emissivity itself
    e = s0.emid.value
    # H + He (fully ionised, angr He/H = 0.0977) bremsstrahlung at 1 cm^-3, Born Gaunt factor, per keV
    t = kt * 1.160452e7
    brems = 6.8e-38 * (1 + 4 * 0.0977) / np.sqrt(t) * np.exp(-e / kt) * np.sqrt(3) / np.pi * k0e(e / (2 * kt))
    brems *= 1.0 / 6.62607015e-27 / (e * 1.602176634e-9) * 1.602176634e-9  # erg/Hz -> photons/keV
    cont = (e > 2.0) & (e < 6.0)  # free of the modelled lines
    # The kT grid point nearest 8 keV is interpolated linearly in kT: allow 2%.
    assert s0.flux.value[cont] == pytest.approx(brems[cont], rel=0.02)
    metal = s1.flux.value - s0.flux.value
    assert metal.min() >= 0 and (s3.flux.value - s0.flux.value) == pytest.approx(3 * metal, rel=1e-4, abs=1e-30)
    fe = (e > 6.5) & (e < 7.1)
    assert metal[fe].sum() > 0.3 * s0.flux.value[fe].sum()  # the Fe K lines stand out at solar metallicity


def test_approximate_response_and_background(xray_data):
    import soxs

    arf = soxs.AuxiliaryResponseFile(xray_data.arf)
    assert arf.max_area == pytest.approx(431.0, rel=0.01)  # Cycle 19 aimpoint peak (FACTS.md)
    assert arf.interpolate_area([1.0, 5.0]).value == pytest.approx([111.0, 329.0], rel=0.02)
    p = load_params(ROOT / "params/ci.yaml", ["observe.exposure_ks=1"])
    # SOXS's ACIS-I particle background: 2.39e-3 counts/s/arcmin^2 in 0.5-7 keV (FACTS.md)
    assert band_background_counts(xray_data, p.observe) / 1e3 / 400 == pytest.approx(2.39e-3, rel=0.01)


# --- the detector and the pointing -----------------------------------------------------------------


def test_pointing_draws_only_for_the_options_that_are_on():
    prng = np.random.default_rng(1)
    state = prng.bit_generator.state
    assert simulate.pointing(prng, load_params(None).observe) == simulate.Pointing(0.0, None, 100.0)
    assert prng.bit_generator.state == state  # the paper's mocks: SOXS's random stream untouched
    on = ["observe.random_roll=true", "observe.pointing_offset_arcmin=2"]
    p = load_params(None, on).observe
    draws = [simulate.pointing(prng, p) for _ in range(4000)]
    roll = np.array([d.roll_deg for d in draws])
    r = np.hypot(*np.array([d.shift_arcsec for d in draws]).T) / 120.0  # arcsec / (2')
    assert 0.0 <= roll.min() and roll.max() < 360.0 and roll.mean() == pytest.approx(180.0, abs=5.0)  # 3 sigma
    # uniform in the disk: (r / R)^2 is uniform in [0, 1)
    assert r.max() <= 1.0 and np.mean(r**2) == pytest.approx(0.5, abs=0.015)
    assert {d.exposure_ks for d in draws} == {100.0}
    # An exposure range draws after the others: the same roll and offset as without it.
    ranged = load_params(None, [*on, "observe.exposure_range_ks=[25, 100]"]).observe
    again = [simulate.pointing(np.random.default_rng(7), q) for q in (p, ranged)]
    assert again[0].roll_deg == again[1].roll_deg and np.array_equal(again[0].shift_arcsec, again[1].shift_arcsec)
    t = np.array([simulate.pointing(prng, ranged).exposure_ks for _ in range(4000)])
    # log-uniform in [25, 100] ks: ln(t / 25) / ln 4 uniform in [0, 1] (mean 1/2, sd 1/sqrt(12) / sqrt(4000))
    assert 25.0 <= t.min() and t.max() <= 100.0
    assert np.mean(np.log(t / 25.0) / np.log(4.0)) == pytest.approx(0.5, abs=0.014)


def blank_field(data, tmp_path, *overrides):
    """A blank-sky mock through simple_acisi (ci.yaml, 100 ks): its image, SOXS's instrument specification, the
    image's exposure fraction (None for the paper's full field) and the params."""
    import contextlib

    p = load_params(ROOT / "params/ci.yaml", ["observe.exposure_ks=100", *overrides]).observe
    setup = simulate.Setup(p, data, xray.register_instrument(p, data), np.nan, 0)
    with contextlib.chdir(tmp_path), simulate.quiet_libraries():
        evt, _ = simulate.sky_field(setup, tmp_path / "blank_evt.fits", np.random.default_rng(5))
        exposure = None if p.full_field else simulate.exposure_image(evt, p, data.arf)
    image = imaging.image_from_event_file(evt, fov_arcmin=p.fov_arcmin, pixels=p.image_pixels)[0]
    return image, xray.instrument_spec(p, data), exposure, p


def test_acisi_chips_take_soxs_layout_and_the_background_falls_on_them_only(xray_data, tmp_path):
    square, *_ = blank_field(xray_data, tmp_path)
    chips, spec, _, _ = blank_field(xray_data, tmp_path, "observe.chips=acisi")
    assert [c[3:] for c in spec["chips"]] == [[1024, 1024]] * 4 and spec["aimpt_coords"] == [86.0, 57.0]
    plate_arcsec = spec["fov"] * 60.0 / spec["num_pixels"]
    assert plate_arcsec == pytest.approx(0.492, abs=1e-3)  # ACIS's pixel
    # The four 8.4' chips (all inside the 20' field at roll 0): 70.5% of it; Poisson noise ~0.5%.
    chip_area = 4 * (1024 * plate_arcsec) ** 2 / (20 * 60.0) ** 2
    assert chips.sum() / square.sum() == pytest.approx(chip_area, rel=0.02)
    assert square.min() > 0 and (chips == 0).mean() > 0.2  # the field's edges get no events
    # The 11" gaps (no dither) empty ~30% of the 37.5" pixels they cross: one row and one column dip.
    rows, cols = np.flatnonzero(chips.any(axis=1)), np.flatnonzero(chips.any(axis=0))
    inner = chips[rows[1]:rows[-1], cols[1]:cols[-1]]  # the array less its partly covered edge pixels
    for sums in (inner.sum(axis=0), inner.sum(axis=1)):
        assert np.sort(sums)[0] < 0.85 * np.median(sums) < np.sort(sums)[1]


@pytest.mark.parametrize("overrides", [["observe.chips=acisi", "observe.dither=true", "observe.random_roll=true",
                                        "observe.pointing_offset_arcmin=2"], ["observe.pointing_offset_arcmin=2"]])
def test_the_exposure_map_says_where_the_background_fell(xray_data, tmp_path, overrides):
    image, _, exposure, p = blank_field(xray_data, tmp_path, *overrides)
    assert exposure.shape == image.shape and exposure.dtype == np.float32
    # off the chips 0, on them 1 (FFT ringing of a few % by the gaps' edges)
    assert exposure.min() == 0.0 and exposure.max() < 1.1 and (np.abs(exposure - 1) < 1e-3).mean() > 0.5
    per_pixel = band_background_counts(xray_data, p) / p.image_pixels**2  # ~93 counts where fully exposed
    # the flat background, pixel by pixel, in proportion to the time each pixel was on a chip
    assert image.sum() == pytest.approx(per_pixel * exposure.sum(), rel=0.02)
    assert image[exposure == 0].sum() < 1e-3 * image.sum()
    pull = (image - per_pixel * exposure) / np.sqrt(per_pixel * exposure + 1.0)
    assert np.sqrt(np.mean(pull**2)) < 1.3


def test_predict_reads_a_soxs_exposure_map_as_the_observe_stage_does(xray_data, tmp_path):
    """``predict --expmap`` places a map through its WCS (any tangent point, binning, centre); on the SOXS map of
    a mock centred on its tangent point it gives the observe stage's exposure image (up to the normalisation:
    the map's maximum there, the ARF's area here), and centred 3 image pixels off it, that image shifted."""
    import contextlib

    from hpcmass.predict.events import bin_event_file

    overrides = ["observe.chips=acisi", "observe.dither=true", "observe.random_roll=true",
                 "observe.pointing_offset_arcmin=2"]
    _, _, exposure, p = blank_field(xray_data, tmp_path, *overrides)
    evt = tmp_path / "blank_evt.fits"
    with contextlib.chdir(tmp_path), simulate.quiet_libraries():
        expmap = simulate.write_exposure_map(evt, p)
    events = imaging.read_events(evt)
    geometry = dict(fov_arcmin=p.fov_arcmin, pixels=p.image_pixels, bands=p.bands)
    pixel = p.fov_arcmin / 60.0 / p.image_pixels / events.pixel_deg  # image pixels, in sky pixels
    for shift in (0, 3):
        center = events.pixel_to_sky(events.crpix[0] + shift * pixel, events.crpix[1])
        placed = bin_event_file(evt, center_radec=center, expmap=expmap, **geometry).exposure
        placed = placed / placed.max() * exposure.max()
        # The same nearest map pixel for every sample point: the same fractions (46% differ unshifted, at 3).
        np.testing.assert_allclose(placed[:, : placed.shape[1] - shift], exposure[:, shift:], atol=1e-5)


# --- one cluster through pyXSIM and SOXS ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["cold", "starforming"])
def test_cold_or_starforming_gas_gives_background_only(xray_data, cutouts, tmp_path, kind):
    obs, p = observe(xray_data, tmp_path, cutouts / f"{kind}.hdf5", "observe.exposure_ks=20")
    assert obs.n_photons == 0
    expected = band_background_counts(xray_data, p)
    for image in obs.images[:, 0]:  # each projection's one band
        assert image.sum() == pytest.approx(expected, rel=0.10)
        # flat: the four quadrants agree within Poisson noise
        q = [image[:16, :16].sum(), image[:16, 16:].sum(), image[16:, :16].sum(), image[16:, 16:].sum()]
        assert np.ptp(q) < 5 * np.sqrt(expected / 4)


def test_hot_cluster_adds_source_counts_and_peaks_at_the_centre(xray_data, cutouts, tmp_path):
    obs, p = observe(xray_data, tmp_path, cutouts / "compact.hdf5", "observe.exposure_ks=30",
                     center=(20.0, 204_990.0, 5.0))
    assert obs.n_photons > 10_000
    assert obs.images.shape == (3, 1, 32, 32)  # projections, bands, pixels, pixels
    for image in obs.images[:, 0]:
        assert image.sum() > 1.3 * band_background_counts(xray_data, p)
        row, col = np.unravel_index(image.argmax(), image.shape)
        assert row in (15, 16) and col in (15, 16)  # one of the four pixels around the centre


def test_a_range_of_exposures_gives_each_projection_its_own(xray_data, cutouts, tmp_path):
    """Background only (cold gas): each projection's counts are the particle background of its own exposure,
    drawn in the range; the photons were made for the longest."""
    obs, p = observe(xray_data, tmp_path, cutouts / "cold.hdf5", "observe.exposure_ks=10",
                     "observe.exposure_range_ks=[2.5, 20]")
    assert obs.exposure_ks.shape == (3,) and ((2.5 <= obs.exposure_ks) & (obs.exposure_ks <= 20)).all()
    assert np.ptp(obs.exposure_ks) > 0  # three independent draws
    per_ks = band_background_counts(xray_data, p) / p.exposure_ks
    for image, t in zip(obs.images[:, 0], obs.exposure_ks, strict=True):
        expected = per_ks * float(t)  # 2,300-19,000 counts: 5 sigma is 4-1%
        assert image.sum() == pytest.approx(expected, abs=5 * np.sqrt(expected))


def test_counts_scale_linearly_with_exposure(xray_data, cutouts, tmp_path):
    short, _ = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.exposure_ks=5")
    long, _ = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.exposure_ks=20")
    n_short, n_long = short.images.sum(axis=(1, 2, 3)), long.images.sum(axis=(1, 2, 3))
    # independent Poisson draws: the ratio is 4 within 4 sigma of its noise
    sigma = 4 * np.sqrt(1 / n_short + 1 / n_long)
    assert np.all(np.abs(n_long / n_short / 4 - 1) < 4 * sigma)
    assert long.n_photons / short.n_photons == pytest.approx(4, rel=0.05)


def test_wabs_absorption_reduces_soft_counts_as_the_model_predicts(xray_data, cutouts, tmp_path):
    """Counts with N_H = 1e22 equal the unabsorbed events' sum of exp(-sigma_wabs(E) N_H)."""
    from astropy.io import fits
    from soxs.spectra.foreground_absorption import wabs_cross_section

    band = ("observe.particle_background=false", "observe.bands=[[0.5, 2.0]]", "observe.exposure_ks=20")
    clear, p = observe(xray_data, tmp_path / "a", cutouts / "relaxed.hdf5", "observe.nh_1e22=0", *band, events=True)
    absorbed, _ = observe(xray_data, tmp_path / "b", cutouts / "relaxed.hdf5", "observe.nh_1e22=1.0", *band, events=True)
    for axis, evt, image in zip(p.axes, clear.event_files, absorbed.images, strict=True):
        ev = imaging.read_events(evt)
        true_e = np.asarray(fits.getdata(evt, "EVENTS")["SOXS_ENERGY"], float) / 1e3
        in_band = (ev.energy_kev >= p.emin_kev) & (ev.energy_kev < p.emax_kev)
        predicted = np.exp(-1.0e22 * wabs_cross_section(true_e[in_band])).sum()
        assert predicted < 0.7 * in_band.sum(), axis  # a strong effect in 0.5-2 keV
        # both counts are Poisson: 5 sqrt(predicted) is 3.5 sigma of their difference
        assert image.sum() == pytest.approx(predicted, abs=5 * np.sqrt(predicted)), axis


def test_image_total_equals_event_list_band_count(xray_data, cutouts, tmp_path):
    obs, p = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.bands=[[0.5, 1.2], [1.2, 2.5], [2.5, 7]]",
                     events=True)
    assert [f.name for f in obs.event_files] == [f"cluster000003_{a}_evt.fits" for a in p.axes]
    assert obs.images.shape == (3, 3, 32, 32)
    for evt, image in zip(obs.event_files, obs.images, strict=True):
        ev = imaging.read_events(evt)
        assert ev.exposure_s == pytest.approx(p.exposure_ks * 1e3)
        assert image.sum() == np.count_nonzero((ev.energy_kev >= 0.5) & (ev.energy_kev < 7.0)) > 0
        for band, (lo, hi) in zip(image, p.bands):  # each band its own events (the field holds them all)
            assert band.sum() == np.count_nonzero((ev.energy_kev >= lo) & (ev.energy_kev < hi)) > 0
        # and the public binning function gives back exactly the stored training image
        assert np.array_equal(imaging.image_from_event_file(evt, fov_arcmin=p.fov_arcmin, pixels=p.image_pixels,
                                                            bands=p.bands), image)


def test_same_seed_same_images_and_nothing_left_in_scratch(xray_data, cutouts, tmp_path):
    a, _ = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.axes=[z]")
    b, _ = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.axes=[z]")
    c, _ = observe(xray_data, tmp_path, cutouts / "relaxed.hdf5", "observe.axes=[z]", "run.seed=7")
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert list((tmp_path / "scratch").iterdir()) == []

