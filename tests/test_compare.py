"""`hpcmass compare`: two runs of one sample side by side, their scatters and the paired difference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import base_env, hpcmass
from toy_clusters import toy_images, write_toy_store

from hpcmass.dataset.folds import assign_folds
from hpcmass.errors import InputError
from hpcmass.mpi import world
from hpcmass.params import load_params
from hpcmass.report.compare import compare, paired_scatter_difference, read_run
from hpcmass.report.stats import gaussian_fit
from hpcmass.store import Store

THREE = "observe.bands=[[0.5, 1.2], [1.2, 2.5], [2.5, 7.0]]"


def _run(workdir, sets, delta, n_folds=3):
    """A store up to the train stage whose held-out predictions are the truth plus ``delta`` (clusters, 24)."""
    params = load_params("params/ci.yaml", sets)
    images, log_m = toy_images(delta.shape[0], pixels=24, seed=3, bands=len(params.observe.bands))
    write_toy_store(workdir, params, images, log_m, assign_folds(log_m, n_folds))
    with Store.open_stage(workdir, params, "train", world(), n_units=n_folds, unit="fold") as st:
        st.require("pred_log_m500c", clusters=delta.shape[0], views=24)[...] = log_m[:, None] + delta
        for name in ("epoch_chosen", "epochs_trained", "criteria_met"):
            st.require(name)[...] = 1
        for name in ("history_loss", "history_val_loss", "history_val_met"):
            st.require(name, epochs=1)[...] = 0.0
        for k in range(n_folds):
            st.mark_done(k)
    return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    delta = np.random.default_rng(0).normal(0.0, 0.05, (12, 24))
    one = _run(base / "one", ["catalog.n_clusters=12"], delta)
    # the second run halves every residual: its scatter is half the first's on every resample of clusters
    three = _run(base / "three", ["catalog.n_clusters=12", THREE], 0.5 * delta)
    return one, three, delta, base


def test_the_difference_is_paired_on_the_same_resampled_clusters(runs):
    one, three, delta, _ = runs
    result = compare(one, three, n_resamples=300)
    a, b, p = result["runs"][0]["all"], result["runs"][1]["all"], result["paired"]
    stored = read_run(one).delta  # float32 predictions: delta to ~1e-6 dex
    assert np.abs(stored - delta).max() < 2e-6
    assert a == gaussian_fit(stored, 300, 12345).as_dict()  # the report's fit, seed and resamples
    assert b["sigma"] == pytest.approx(0.5 * a["sigma"], rel=1e-4)
    assert b["sigma_lo"] == pytest.approx(0.5 * a["sigma_lo"], rel=1e-4)
    # the same clusters in both runs on every resample: the difference's interval is -1/2 of the first's
    assert p["sigma_difference"] == pytest.approx(-0.5 * a["sigma"], rel=1e-4)
    assert (p["sigma_difference_lo"], p["sigma_difference_hi"]) == pytest.approx((-0.5 * a["sigma_hi"],
                                                                                  -0.5 * a["sigma_lo"]), rel=1e-4)
    assert result["same"] == {"clusters": 12, "folds": 3, "seed": 12345, "views": 24}
    assert "observe.bands" in result["differences"] and "catalog" not in result["differences"]
    assert [r["parameters"] for r in result["runs"]] == [58_437, 58_725]
    assert result["transfer"] == {"skipped": f"{one / 'model'}: no exported model; run `hpcmass export-model "
                                             f"--workdir {one}`"}
    # unpaired runs would not cancel the sample's own scatter: one run against a shuffle of itself
    shuffled = paired_scatter_difference(delta, delta[::-1], 300, 1)
    assert shuffled["sigma_difference"] == pytest.approx(0.0, abs=1e-12)
    assert shuffled["sigma_difference_hi"] - shuffled["sigma_difference_lo"] > 1e-3


def test_compare_cli_writes_the_table_and_refuses_another_sample(runs, tmp_path):
    one, three, delta, base = runs
    env = base_env(tmp_path)
    proc = hpcmass("compare", one, three, "--output", tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Same 12 clusters, 3 folds, run.seed 12345; the runs differ in: observe.bands" in proc.stdout
    assert "| 0.5-1.2, 1.2-2.5, 2.5-7 keV | 58,725 |" in proc.stdout and "paired cluster bootstrap" in proc.stdout
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert (tmp_path / "out" / "compare.md").read_text().strip() == proc.stdout.strip()
    assert saved["provenance"]["hpcmass_version"] and saved["runs"][0]["train_params_hash"]
    other_seed = _run(base / "seed", ["catalog.n_clusters=12", "run.seed=7"], delta)
    other_folds = _run(base / "folds", ["catalog.n_clusters=12", "dataset.n_folds=4"], delta, n_folds=4)
    for other, why in ((other_seed, "run.seed 12345 and 7"), (other_folds, "other folds (dataset.n_folds: 3 -> 4)")):
        with pytest.raises(InputError, match=why.replace("(", r"\(").replace(")", r"\)")):
            compare(one, other)
    proc = hpcmass("compare", one, other_seed, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = hpcmass("compare", one, env=env)
    assert proc.returncode == 2 and "expected two workdirs (RUN_A RUN_B), got 1" in proc.stderr
