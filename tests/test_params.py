"""Params: every shipped file validates; bad input gives one line naming file, key, value, expectation."""

from __future__ import annotations

import pytest

from hpcmass.errors import ParamsError
from hpcmass.params import LATER_KEYS, STAGES, load_params
from conftest import ROOT, hpcmass

PARAM_FILES = sorted((ROOT / "params").glob("*.yaml"))


def test_shipped_param_files_validate():
    names = {p.stem for p in PARAM_FILES}
    assert {"ci", "demo", "paper", "tng300"} <= names
    for path in PARAM_FILES:
        load_params(path)


def test_paper_params_are_the_papers():
    p = load_params(ROOT / "params" / "paper.yaml")
    assert p.catalog.n_clusters == 329
    assert (p.catalog.log_m500c_min, p.catalog.log_m500c_max) == (13.57, 15.06)
    assert p.observe.redshift == 0.05 and p.observe.exposure_ks == 100.0
    assert p.observe.image_pixels == 128 and (p.observe.emin_kev, p.observe.emax_kev) == (0.5, 7.0)
    assert p.dataset.n_folds == 10 and p.train.max_epochs == 400 and p.train.learning_rate == 5e-4


def test_params_are_frozen():
    from pydantic import ValidationError

    p = load_params(None)
    with pytest.raises(ValidationError, match=r"n_clusters\n  Instance is frozen \[type=frozen_instance"):
        p.catalog.n_clusters = 3
    assert p.catalog.n_clusters == load_params(None).catalog.n_clusters


def test_overrides_parse_yaml_scalars_including_bare_exponents():
    p = load_params(None, ["train.learning_rate=1e-3", "catalog.n_clusters=40", "observe.axes=[x, z]"])
    assert p.train.learning_rate == 1e-3 and p.catalog.n_clusters == 40 and p.observe.axes == ("x", "z")


def test_energy_bands_are_contiguous_and_cover_the_broad_band():
    p = load_params(None, ["observe.bands=[[0.5, 1.2], [1.2, 2.5], [2.5, 7]]"])
    assert p.observe.bands == ((0.5, 1.2), (1.2, 2.5), (2.5, 7.0)) and (p.observe.emin_kev, p.observe.emax_kev) == (0.5, 7)
    assert load_params(None).observe.bands == ((0.5, 7.0),)  # the paper's one broad band
    default = load_params(None)
    assert p.stage_hash("catalog") == default.stage_hash("catalog")
    assert p.stage_hash("observe") != default.stage_hash("observe")  # a store of other bands is refused


@pytest.mark.parametrize("key, value", [("instrument", "axis"), ("chips", "acisi"), ("random_roll", True),
                                        ("pointing_offset_arcmin", 1.5), ("exposure_range_ks", [50.0, 100.0])])
def test_keys_added_later_leave_older_stores_hashes_alone_at_their_default(key, value):
    default, other = load_params(None), load_params(None, [f"observe.{key}={value}"])
    later = {k for section, k in LATER_KEYS if section == "observe"}
    assert key in later and not later & set(default.stage_identity("observe")["observe"])  # as before they existed
    assert default.stage_identity("observe")["observe"] == {
        k: v for k, v in default.observe.model_dump(mode="json").items() if k not in later}
    assert other.stage_identity("observe")["observe"][key] == value
    assert other.stage_hash("observe") != default.stage_hash("observe")
    assert other.stage_hash("catalog") == default.stage_hash("catalog")


def test_an_exposure_range_holds_the_exposure_the_images_are_scaled_to():
    p = load_params(None, ["observe.exposure_range_ks=[20, 200]"]).observe
    assert (p.exposure_range_ks, p.photon_exposure_ks) == ((20.0, 200.0), 200.0)
    assert load_params(None).observe.photon_exposure_ks == 100.0
    for bad in ("[20, 50]", "[200, 20]", "[0, 100]"):
        with pytest.raises(ParamsError, match=r"observe.exposure_range_ks"):
            load_params(None, [f"observe.exposure_range_ks={bad}"])


@pytest.mark.parametrize("overrides", [["observe.instrument=axis"], ["observe.chips=acisi", "observe.dither=true"],
                                       ["observe.exposure_range_ks=[50, 100]"]])
def test_resolved_params_read_back_beside_another_detector(tmp_path, overrides):
    # A resolved file writes every key, the other instrument's unused ones at their defaults too.
    p = load_params(None, overrides)
    (tmp_path / "resolved.yaml").write_text(p.to_yaml())
    assert load_params(tmp_path / "resolved.yaml").model_dump() == p.model_dump()


def test_a_diff_shows_a_key_added_later_at_its_default():
    from hpcmass.store.provenance import params_diff

    old, new = (load_params(None, o).stage_identity("observe") for o in ([], ["observe.chips=acisi"]))
    assert "chips" not in old["observe"] and params_diff(old, new) == "observe.chips: 'none' -> 'acisi'"


def test_stage_hash_depends_on_upstream_sections_only():
    a = load_params(None)
    b = load_params(None, ["train.batch_size=64"])
    assert all(a.stage_hash(s) == b.stage_hash(s) for s in ("catalog", "observe", "dataset"))
    assert a.stage_hash("train") != b.stage_hash("train") and a.stage_hash("report") != b.stage_hash("report")
    c = load_params(None, ["site.partition=gpu"])
    assert all(a.stage_hash(s) == c.stage_hash(s) for s in STAGES)


@pytest.mark.parametrize(
    "yaml_text, overrides, expected",
    [
        ("catalog:\n  n_clusterz: 20\n", [], ["unknown key", "catalog.n_clusterz"]),
        ("catalog:\n  n_clusters: twenty\n", [], ["catalog.n_clusters", "'twenty'", "integer"]),
        ("train:\n  learning_rate: -1.0\n", [], ["train.learning_rate", "-1.0", "> 0"]),
        ("observe:\n  axes: [x, w]\n", [], ["observe.axes.1", "'w'", "'x'"]),
        ("catalog:\n  source: millennium\n", [], ["catalog.source", "'millennium'", "'synthetic'"]),
        ("catalog:\n  n_clusters: 5\n", [], ["catalog.n_clusters", "5", "at least 10"]),
        ("catalog: [1, 2\n", [], ["not valid YAML", "line"]),
        ("train:\n  max_epochs: 3\n  max_epochs: 4\n", [], ["duplicate key 'max_epochs'"]),
        ("run:\n  name: x\n", ["train.batch_size=0"], ["--set train.batch_size=0", "train.batch_size", ">= 1"]),
        ("run:\n  name: x\n", ["train.batchsize=8"], ["--set train.batchsize=8", "unknown key"]),
        ("run:\n  name: x\n", ["nonsense"], ["--set 'nonsense'", "key.path=value"]),
        ("train:\n  horovod: true\n", ["train.stack_folds=true"], ["train.stack_folds", "false with train.horovod"]),
        ("observe:\n  bands: [[0.5, 1.2], [1.5, 7.0]]\n", [], ["observe.bands", "[[0.5, 1.2], [1.5, 7.0]]",
                                                              "contiguous ascending bands"]),
        ("observe:\n  emax_kev: 2.0\n", [], ["unknown key 'observe.emax_kev'; it became observe.bands"]),
        ("observe:\n  instrument: axis\n  psf_fwhm_arcsec: 1.0\n", [],
         ["observe.psf_fwhm_arcsec = 1.0", "it describes the simple_acisi instrument, and observe.instrument=axis "
                                           "brings its own from SOXS's registry"]),
        ("observe:\n  instrument: axis\n  chips: acisi\n", [],
         ["observe.chips", "it describes the simple_acisi instrument"]),
        ("observe:\n  chips: acisi\n  detector_pixel_arcsec: 1.0\n", [],
         ["observe.detector_pixel_arcsec = 1.0", "observe.chips=acisi brings its own pixels"]),
        ("observe:\n  pointing_offset_arcmin: -1\n", [], ["observe.pointing_offset_arcmin", ">= 0"]),
    ],
)
def test_bad_params_give_one_line_and_exit_2(tmp_path, env, yaml_text, overrides, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    sets = [a for o in overrides for a in ("--set", o)]
    proc = hpcmass("status", "--params", bad, *sets, "--workdir", tmp_path / "w", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    if not overrides:
        assert str(bad) in lines[0]


def test_missing_params_file_names_it(tmp_path, env):
    proc = hpcmass("status", "--params", tmp_path / "nope.yaml", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hpcmass status: error: {tmp_path / 'nope.yaml'}: params file not found"


def test_load_params_raises_typed_error(tmp_path):
    with pytest.raises(ParamsError, match=r"catalog.log_m500c_max"):
        load_params(None, ["catalog.log_m500c_max=13.0"])
