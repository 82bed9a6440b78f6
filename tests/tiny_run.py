"""A tiny but consistent store up to the train stage, for the interpret and report tests.

Catalog, observe, dataset and train groups are written through the Store API with the LAYOUT
names, from toy β-model images (tests/toy_clusters.py); each fold's model is the paper's CNN
trained for a few epochs on its training clusters and saved where ``load_fold_model`` looks,
and ``/train/pred_log_m500c`` holds those models' test-fold predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from toy_clusters import FIELD_ARCSEC, FIELD_KPC, toy_images, write_toy_store

from hpcmass.dataset.folds import assign_folds, split
from hpcmass.images import N_VIEWS, make_views
from hpcmass.mpi import world
from hpcmass.store import Store

#: The toy images' flat background [counts per pixel] (tests/toy_clusters.py).
TOY_BACKGROUND = 0.3


def write_response(directory: Path, params) -> dict:
    """The approximate ACIS-I ARF/RMF and a flat particle background PHA whose band rate gives the
    toy images' TOY_BACKGROUND counts per pixel; returns the observe stage's ``data_files`` record."""
    from astropy.io import fits

    from hpcmass.observe import approx

    directory.mkdir(parents=True, exist_ok=True)
    approx.write_arf(directory / "toy.arf")
    approx.write_rmf(directory / "toy.rmf")
    lo, hi = approx.channel_edges()
    band = (lo >= params.observe.emin_kev) & (hi <= params.observe.emax_kev)
    pixel_arcmin2 = (FIELD_ARCSEC / params.observe.image_pixels / 60) ** 2
    rate = np.where(band, TOY_BACKGROUND / (1e3 * params.observe.exposure_ks * pixel_arcmin2) / band.sum(), 0.0)
    hdu = fits.BinTableHDU.from_columns([fits.Column(name="CHANNEL", format="J", array=np.arange(1, lo.size + 1)),
                                         fits.Column(name="COUNT_RATE", format="E", array=rate)])
    hdu.name = "SPECTRUM"
    hdu.writeto(directory / "toy_bkgnd.pha")
    return {"mode": "toy", "soxs_data_dir": str(directory), "arf": "toy.arf", "rmf": "toy.rmf",
            "bkgnd": "toy_bkgnd.pha", "foreground": False}


def build_tiny_run(workdir, params, epochs: int = 3) -> None:
    import tf_keras

    from hpcmass.train.model import build_model, model_path, predict_log_m500c, save_model_atomic
    from hpcmass.train.stopping import decide, evaluate_params

    n, pixels = params.catalog.n_clusters, params.observe.image_pixels
    images, log_m = toy_images(n, pixels, seed=params.run.seed % 1000, bands=len(params.observe.bands))
    pixel_kpc = FIELD_KPC / pixels
    # toy core radius ~ P/12 at log M = 14.3 and rc ~ 0.18 R500c, growing as M^(1/3)
    r500c_kpc = pixels / 12 / 0.18 * pixel_kpc * 10 ** ((log_m - 14.3) / 3)
    folds = assign_folds(log_m, params.dataset.n_folds)
    files = write_response(Path(workdir) / "observe" / "response", params)
    write_toy_store(workdir, params, images, log_m, folds, r500c_kpc=r500c_kpc,
                    observe_attrs=dict(data_files=json.dumps(files),
                                       instrument=json.dumps({"bkgnd": [files["bkgnd"], 1.0]})))
    views = make_views(images).astype(np.float32)  # (n, 24, bands, P, P)
    pred = np.full((n, N_VIEWS), np.nan, dtype=np.float32)
    k_folds, tp = params.dataset.n_folds, params.train
    history = {key: np.full((k_folds, epochs), np.nan) for key in ("loss", "val_loss", "val_met")}
    kept = np.zeros(k_folds, dtype=int)
    for k in range(k_folds):
        train, val, test = split(folds, k, k_folds)
        tf_keras.utils.set_random_seed(params.run.seed + k)
        model = build_model(pixels, params.dataset.scaling, seed=k, bands=images.shape[2])
        model.layers[-1].bias.assign([float(np.mean(log_m[train]))])
        model.compile(optimizer=tf_keras.optimizers.Adam(tp.learning_rate), loss="mse")
        for e in range(epochs):  # the train stage's record and stopping rule, without its checkpoints
            fit = model.fit(views[train].reshape(-1, *views.shape[2:]), np.repeat(log_m[train], N_VIEWS), epochs=1,
                            batch_size=32, verbose=0, shuffle=True)
            val_pred = predict_log_m500c(model, views[val]).ravel()
            val_true = np.repeat(log_m[val], N_VIEWS)
            history["loss"][k, e] = fit.history["loss"][0]
            history["val_loss"][k, e] = np.mean((val_pred - val_true) ** 2)
            history["val_met"][k, e] = evaluate_params(val_pred, val_true, tp).met
            d = decide(history["val_loss"][k, :e + 1], history["val_met"][k, :e + 1], tp.stopping, tp.patience,
                       epochs)
            if d.kept == e + 1:
                kept[k], weights = d.kept, model.get_weights()
        model.set_weights(weights)
        save_model_atomic(model, model_path(workdir, k))
        pred[test] = predict_log_m500c(model, views[test])
    with Store.open_stage(workdir, params, "train", world(), n_units=k_folds, unit="fold") as st:
        st.require("pred_log_m500c", clusters=n, views=N_VIEWS)[...] = pred
        st.require("epoch_chosen")[...] = kept
        st.require("epochs_trained")[...] = epochs
        st.require("criteria_met")[...] = [history["val_met"][k, kept[k] - 1] for k in range(k_folds)]
        for key, values in history.items():
            st.require(f"history_{key}", epochs=epochs)[...] = values
        for k in range(k_folds):
            st.mark_done(k)
