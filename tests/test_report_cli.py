"""`hpcmass report` on a tiny store: the page, its figures, clusters.csv and the store's report group."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html import escape

import numpy as np
import pytest
from conftest import ROOT, hpcmass, mpirun
from tiny_run import build_tiny_run

from hpcmass.dataset.folds import split
from hpcmass.params import load_params
from hpcmass.report.lx import fit_power_law
from hpcmass.report.stats import gaussian_fit
from hpcmass.store import Store

pytestmark = pytest.mark.mpi  # every test here runs hpcmass under real mpirun
PARAMS = ROOT / "params" / "ci.yaml"
FAST = ["--set", "report.bootstrap_resamples=100"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A tiny interpreted store, reported by a plain process and by a 2-rank mpirun (on a copy)."""
    root = tmp_path_factory.mktemp("report")
    base = root / "base"
    build_tiny_run(base, load_params(PARAMS, FAST[1:]))
    early = hpcmass("report", "--params", PARAMS, "--workdir", base, *FAST)
    proc = mpirun(1, "-m", "hpcmass", "interpret", "--params", PARAMS, "--workdir", base, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = root / "two"
    shutil.copytree(base, two)
    one = hpcmass("report", "--params", PARAMS, "--workdir", base, *FAST)
    par = mpirun(2, "-m", "hpcmass", "report", "--params", PARAMS, "--workdir", two, *FAST)
    for p in (one, par):
        assert p.returncode == 0, p.stderr[-3000:]
    return {"early": early, 1: base, 2: two}


def test_report_needs_the_interpret_stage(reports):
    assert reports["early"].returncode == 1
    assert "the interpret stage has not been run; run `hpcmass interpret" in reports["early"].stderr


def test_html_references_figures_that_exist(reports):
    out = reports[1] / "report"
    html = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(images) == ["fig1_images.png", "fig3_pred_vs_true.png", "fig4_residual_pdf.png",
                              "fig5_deepdream.png", "fig6_radial_profile.png", "fig7_nulls_occlusion.png",
                              "fig_training.png"]
    for name in images:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    for link in re.findall(r'<a href="([^"]+)"', html):
        assert (out / link).is_file(), link
    # the paper's numbers stand beside this run's, with provenance and the data mode
    for text in ("0.051", "-0.022", "0.033", "0.041", "14.6%", "22.2%",
                 "toy test images", "params hash", "tensorflow", "seed: 12345"):
        assert text in html, text
    assert "mock images" in html and "so there are no oracle rows" in html


def test_numbers_match_the_store(reports):
    out = reports[1] / "report"
    summary = json.loads((out / "summary.json").read_text())
    with Store.read(reports[1]) as s:
        assert s.is_complete("report")
        log_m = s.file["catalog/log_m500c"][...]
        pred = s.file["train/pred_log_m500c"][...].astype(float)
        lx = s.file["report/lx_erg_s"][...]
        lx_pred = s.file["report/lx_pred_log_m500c"][...]
        apertures = list(s.file["report"].attrs["lx_apertures"])
        val_loss = s.file["train/history_val_loss"][...]
        kept = s.file["train/epoch_chosen"][...]
    # exact, outer and whole at 3% and 5%, iterated: in the store's order and the summary's
    assert apertures == ["exact", "outer_0.03", "outer_0.05", "whole_0.03", "whole_0.05", "iterated"]
    assert list(summary["lx_image"]) == apertures
    assert lx.shape == (10, 3, 6) and (lx > 0).all()
    assert np.isfinite(lx_pred).all()
    fit = gaussian_fit(pred - log_m[:, None], n_resamples=100, seed=12345)
    for key in ("sigma", "mu", "sigma_lo", "sigma_hi", "mu_lo", "mu_hi"):
        assert summary["cnn"]["all"][key] == pytest.approx(getattr(fit, key))
    # the best fold is the one whose kept model has the lowest validation loss, for every estimator
    best = int(np.argmin(val_loss[np.arange(len(kept)), kept - 1]))
    assert summary["cnn"]["best_fold"] == best and summary["lx_image"]["iterated"]["best_fold"] == best
    # the toy clusters follow an exact L-M power law: the image L_X predicts masses well, also without R500c
    for key in ("exact", "iterated"):
        assert summary["lx_image"][key]["all"]["sigma"] < 0.1
    # a relation fitted on the store's exact-aperture L_X of fold 0's training clusters gives its stored masses
    with Store.read(reports[1]) as s:
        fold = s.file["dataset/fold"][...]
    train = split(fold, 0, int(fold.max()) + 1)[0]
    relation = fit_power_law(np.log10(lx[train, :, 0]), np.repeat(log_m[train], 3))
    assert lx_pred[fold == 0, :, 0] == pytest.approx(relation(np.log10(lx[fold == 0, :, 0])), abs=1e-5)
    assert summary["lx_notes"]["iterated_converged"] == 1.0
    assert summary["oracles"] == {}  # toy clusters carry no gas measurements
    growth = summary["lx_aperture_growth"]
    assert growth["paper"]["k"] == pytest.approx(4.18, abs=0.01) and set(growth) == {"paper", "outer", "whole"}
    rows = list(csv.DictReader(open(out / "clusters.csv")))
    assert len(rows) == 10
    for row, m, p in zip(rows, log_m, pred):
        assert float(row["log_m500c_true"]) == pytest.approx(m, abs=1e-4)
        assert float(row["pred_median"]) == pytest.approx(np.median(p), abs=1e-4)
        assert float(row["pred_std"]) == pytest.approx(np.std(p), abs=1e-4)
        assert float(row["lx_ce_image_erg_s"]) > 0
    for i, row in enumerate(rows):
        assert float(row["lx_iterated_pred_log_m500c"]) == pytest.approx(lx_pred[i, :, -1].mean(), abs=1e-4)
    # How each fold ended, replayed from the stored history: the plateau rule kept the lowest
    # validation loss (3 epochs, patience 20: all three trained).
    training = summary["training"]
    assert training["stopping"] == "plateau" and training["patience"] == 20
    for k, fold in enumerate(training["folds"]):
        assert fold["epoch_kept"] == kept[k] and fold["epochs_trained"] == 3
        assert fold["val_loss_kept_over_best"] == pytest.approx(val_loss[k, kept[k] - 1] / val_loss[k].min())
    html = (out / "index.html").read_text()
    assert f"{kept[0]} of 3" in html and "Stopping rule (plateau)" in html
    # The interpretation beside its nulls: medians over clusters with intervals, paired on the same clusters,
    # from the store's per-view values; the verdict quotes them.
    it = summary["interpretation"]
    with Store.read(reports[1]) as s:
        response = s.file["interpret/core_response"][...]
        dlogm = s.file["interpret/occlusion_dlogm"][...]
    cnn = it["nulls"]["explainers"]["cnn"]["core_response"]
    assert cnn["median"] == pytest.approx(np.median(np.nanmedian(response[:, 0], axis=1)), rel=1e-6)
    assert cnn["lo"] <= cnn["median"] <= cnn["hi"] and cnn["n_clusters"] == 10
    assert set(it["nulls"]["paired_cnn_minus_null"]) == {"untrained", "sum_log1p", "log_sum"}
    core = it["occlusion"]["regions"]["core"]
    fold_mean, floor = np.abs(dlogm[:, :, 0]).mean(axis=1).T  # (fills, clusters)
    assert core["fills"]["fold_mean"]["abs_dlogm"]["median"] == pytest.approx(np.median(fold_mean), rel=1e-6)
    assert core["abs_excess_over_floor"]["median"] == pytest.approx(np.median(fold_mean - floor), rel=1e-6)
    assert 0 < core["counts_share"] < 1 and core["pixels"] > 0
    assert len(it["verdict"]) == 2 and it["verdict"][1].startswith("Occlusion by an average cluster: core")
    assert f"{core['fills']['fold_mean']['abs_dlogm']['median']:.3f}" in it["verdict"][1]
    assert escape(it["verdict"][0]) in html
    for row, d in zip(rows, dlogm):
        assert float(row["occlusion_outskirts_own_profile_dlogm"]) == pytest.approx(d[:, 1, 1].mean(), abs=1e-4)


def test_two_ranks_make_the_same_report_and_rerun_is_a_no_op(reports):
    a, b = (reports[k] / "report" for k in (1, 2))
    assert (a / "clusters.csv").read_text() == (b / "clusters.csv").read_text()
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())
    with Store.read(reports[2]) as s:
        assert s.is_complete("report") and int(s.file["report"].attrs["last_run_ranks"]) == 2
    again = hpcmass("report", "--params", PARAMS, "--workdir", reports[2], *FAST)
    assert again.returncode == 0 and "already done" in again.stderr
