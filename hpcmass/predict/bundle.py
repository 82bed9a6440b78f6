"""The exported model directory: everything ``hpcmass predict`` needs, without the store.

Layout (format ``hpcmass-model/4``: version 1 had no energy bands, version 2 no instrument, version 3 no
domain checks; all are refused)::

    model.json          manifest: image geometry, instrument, input scaling, view order, calibration, the domain
                        checks' thresholds (:mod:`hpcmass.predict.domain`), training sample, provenance
                        (versions, git commits, X-ray data mode)
    params.yaml         the resolved params the models were trained with
    fold_KK.keras       the model each cross-validation fold kept (raw counts (bands, P, P) in, log10 M500c out;
                        the input scaling is its first layer)
    features.npz        the out-of-distribution score's reference: each fold model's training features (mean,
                        precision) and the held-out images' scores (absent from models exported before it)
    heldout.csv         per held-out image (cluster, projection): truth, held-out prediction, view
                        spread, out-of-sample interval, covered
    report_clusters.csv the report stage's per-cluster table (when the report was made)

Loading the ``.keras`` files needs hpcmass installed (its ``ScaleCounts`` layer), nothing else.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..errors import InputError, StageError
from ..images import VIEW_ORDER, VIEWS_PER_AXIS, make_views
from ..params import load_params
from ..store import Store, git_commit, package_versions, stage_dir, utc_now
from ..store.readers import load_catalog, load_folds, load_observations, load_predictions
from ..train.files import model_path
from . import checks
from .calibration import Calibration, HeldOut, calibrate
from .domain import BLANK_FIELDS, FEATURES_FILE, calibrate_domain

FORMAT = "hpcmass-model/4"
MANIFEST = "model.json"
#: Where ``export-model`` writes in the workdir unless given ``--output`` (and where ``compare`` looks).
DEFAULT_DIR = "model"
_STAGES = ("catalog", "observe", "dataset", "train")


def export_model(workdir, out, params_file: str | None = None, log=None, blank_fields: int = BLANK_FIELDS) -> dict:
    """Write the model directory ``out`` from a completed train stage; returns its manifest.

    ``out`` is written beside itself and renamed into place; an earlier export there is replaced,
    anything else is refused. ``blank_fields`` blank-sky mocks calibrate the cluster detection.
    """
    workdir, out = Path(workdir), Path(out)
    if out.exists() and not (out / MANIFEST).exists():
        raise InputError(f"{out}: exists and is not an exported hpcmass model; choose another --output")
    with Store.read(workdir) as s:
        for stage in _STAGES:
            s.require_complete(stage, params_file)
        catalog, folds, trained = load_catalog(s), load_folds(s), load_predictions(s)
        observations = load_observations(s)
        report_done = s.is_complete("report")
    cat = {"cluster_id": catalog.cluster_id, "log_m500c": catalog.log_m500c}
    pred, pixels, obs, train = trained.pred_log_m500c, observations.pixels, observations.attrs, trained.attrs
    fit = {"epoch_chosen": trained.epoch_chosen.tolist(), "epochs_trained": trained.epochs_trained.tolist(),
           "criteria_met": trained.criteria_met.tolist()}
    with atomic_path(out, suffix=".partial") as tmp:
        tmp.mkdir()
        (tmp / "params.yaml").write_text(train["params_yaml"])
        params = load_params(tmp / "params.yaml")
        p = params.observe
        if pixels != p.image_pixels:
            raise StageError(f"{workdir}: /observe/images are {pixels} px, the train params say {p.image_pixels}")
        cal, held = calibrate(pred, cat["log_m500c"], folds)
        n_folds = params.dataset.n_folds
        models = []
        for k in range(n_folds):
            src = model_path(workdir, k)
            if not src.exists():
                raise StageError(f"{src}: fold {k}'s model is missing; re-run `hpcmass train --fold {k}`")
            models.append(f"fold_{k:02d}.keras")
            shutil.copy2(src, tmp / models[-1])
        domain, features = calibrate_domain(workdir, params, observations, cat["log_m500c"], folds, pred,
                                            load_models([tmp / m for m in models], (len(p.bands), pixels, pixels)),
                                            blank_fields, log)
        np.savez(tmp / FEATURES_FILE, **features)
        _write_heldout(tmp / "heldout.csv", held, cat["cluster_id"], p.axes)
        report_csv = stage_dir(workdir, "report") / "clusters.csv"
        if report_done and report_csv.exists():
            shutil.copy2(report_csv, tmp / "report_clusters.csv")
        manifest = {
            "format": FORMAT,
            "target": "log10 M500c [Msun]",
            "models": models,
            "image": {
                "fov_arcmin": p.fov_arcmin, "pixels": pixels, "pixel_arcsec": float(obs["pixel_arcsec"]),
                "pixel_kpc": float(obs["pixel_kpc"]), "bands_kev": [list(b) for b in p.bands],
                "centre": "the cluster centre (catalogue position) at the image centre",
                "redshift": p.redshift, "exposure_ks": p.exposure_ks,
                "exposure_range_ks": None if p.exposure_range_ks is None else list(p.exposure_range_ks),
                "projections": list(p.axes),
                "nh_1e22": p.nh_1e22, "absorb_model": p.absorb_model,
                "particle_background": p.particle_background, "point_sources": p.point_sources,
                "random_roll": p.random_roll, "pointing_offset_arcmin": p.pointing_offset_arcmin,
            },
            "instrument": _instrument(workdir, p.instrument, obs),
            "input_scaling": {"method": params.dataset.scaling,
                              "where": "the models' first layer (ScaleCounts): feed raw counts"},
            "views": {"per_image": VIEWS_PER_AXIS, "order": VIEW_ORDER},
            "calibration": {**cal.as_dict(), "method": "split-conformal quantile of held-out |delta|; coverage "
                                                        "leave-one-fold-out (hpcmass/predict/calibration.py)"},
            "domain": domain,
            "training_set": {"n_clusters": int(cat["log_m500c"].size), "n_folds": n_folds,
                             "log_m500c_range": [float(cat["log_m500c"].min()), float(cat["log_m500c"].max())],
                             "stopping": params.train.stopping, **fit},
            "provenance": {
                "exported_utc": utc_now(), "exported_from": str(workdir.resolve()),
                "hpcmass_version": __version__, "git_commit": git_commit(), "versions": package_versions(),
                "train": {"params_hash": train["params_hash"], "git_commit": train["git_commit"],
                          "created_utc": train["created_utc"], "versions": json.loads(train["versions"])},
                "observe": {"data_mode": obs["data_mode"],
                            "data_description": obs.get("data_description", ""),
                            "instrument": json.loads(obs.get("instrument", "{}"))},
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():  # an earlier export (checked above): replaced whole
            shutil.rmtree(out)
    if log:
        log.info("exported %d fold models to %s; %s", len(models), out, cal.describe())
    return manifest


def _instrument(workdir: Path, name: str, observe_attrs: dict) -> dict:
    """What the models were trained to see, and the event-file headers that name it: TELESCOP, and INSTRUME as
    a real observation (the RMF's detector) or SOXS's mock of it (the SOXS instrument's name) writes it."""
    from ..report.response import observe_response, telescope_instrument

    spec = json.loads(observe_attrs["instrument"])
    telescope, detector = telescope_instrument(observe_response(observe_attrs, stage_dir(workdir, "observe") / "approx").rmf)
    return {"name": name, "telescope": telescope, "instrume": sorted({detector, spec["name"]}),
            "psf": spec["psf"], "chips": len(spec["chips"]), "dither": spec["dither"],
            "field_arcmin": spec["fov"]}


def _write_heldout(path: Path, held: HeldOut, cluster_id, axes) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cluster_id", "fold", "projection", "log_m500c_true", "log_m500c_pred", "view_spread_dex",
                    "half_width_dex", "lower", "upper", "covered"])
        for j in range(held.cluster.size):
            c, h = held.central[j], held.half_width[j]
            w.writerow([int(cluster_id[held.cluster[j]]), int(held.fold[j]), axes[held.axis[j]],
                        f"{held.truth[j]:.4f}", f"{c:.4f}", f"{held.view_spread[j]:.5f}", f"{h:.4f}",
                        f"{c - h:.4f}", f"{c + h:.4f}", int(held.covered[j])])


@dataclass
class ModelBundle:
    """An exported model directory, read back."""

    path: Path
    manifest: dict
    _models: list = field(default_factory=list, repr=False)

    @property
    def image(self) -> dict:
        return self.manifest["image"]

    @property
    def instrument(self) -> dict:
        return self.manifest["instrument"]

    @property
    def domain(self) -> dict:
        """The domain checks' thresholds (:mod:`hpcmass.predict.domain`)."""
        return self.manifest["domain"]

    @property
    def calibration(self) -> Calibration:
        c = dict(self.manifest["calibration"])
        c.pop("method", None)
        return Calibration(**c)

    def models(self) -> list:
        """The fold models (loaded once; imports TensorFlow)."""
        if not self._models:
            shape = (len(self.image["bands_kev"]), self.image["pixels"], self.image["pixels"])
            self._models = load_models([self.path / name for name in self.manifest["models"]], shape)
        return self._models

    def predict(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """``(n, models, 8)`` log10 M500c of every fold model on the 8 views of each image ``(n, bands, P, P)``,
        and each image's out-of-distribution score ``(n,)`` (the median over the models of
        :func:`~hpcmass.predict.checks.feature_distance`; None for a model exported before the score existed)."""
        from ..train.model import predict_with_features, with_features

        reference = self.feature_reference
        views = make_views(np.asarray(images)[:, None])  # (n, 8, bands, P, P)
        pred, scores = [], []
        for k, m in enumerate(self.models()):
            p, features = predict_with_features(with_features(m), views)
            pred.append(p)
            if reference is not None:
                scores.append(checks.feature_distance(features, reference["mean"][k], reference["precision"][k]))
        return np.stack(pred, axis=1), (np.median(scores, axis=0) if scores else None)

    @cached_property
    def feature_reference(self) -> dict | None:
        """The arrays of the out-of-distribution score (:func:`~hpcmass.predict.domain.feature_calibration`), or
        None for a model exported before it."""
        if "ood" not in self.domain:
            return None
        with np.load(self.path / self.domain["ood"]["file"]) as f:
            return {k: f[k] for k in f.files}


def load_models(paths, shape: tuple[int, int, int]) -> list:
    """The fold models at ``paths`` (imports TensorFlow), each checked to take ``shape`` (bands, P, P) images."""
    import tensorflow as tf
    import tf_keras

    tf.get_logger().addFilter(_not_a_retracing_warning)  # the same function: added once per process

    from ..train import model as _registers_scale_counts  # noqa: F401  (the models' first layer)

    models = []
    for path in paths:
        m = tf_keras.models.load_model(path, compile=False)
        if tuple(m.input_shape[1:]) != shape:
            raise InputError(f"{path}: takes {m.input_shape[1:]} images, the manifest says {shape} (bands, pixels, "
                             f"pixels)")
        models.append(m)
    return models


def _not_a_retracing_warning(record) -> bool:
    """Each fold model traces its own predict function once; TF counts the ten as one function
    retraced and would warn of "excessive retracing" on every predict run."""
    return "triggered tf.function retracing" not in record.getMessage()


def load_bundle(path) -> ModelBundle:
    """Read an exported model directory; InputError (one line) if it is not one."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        hint = (f"; it looks like a workdir: run `hpcmass export-model --workdir {path}` and pass its --output"
                if (path / "store.h5").exists() else "; make one with `hpcmass export-model`")
        raise InputError(f"{path}: not an exported hpcmass model (no {MANIFEST}){hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{manifest_path}: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{manifest_path}: format {manifest.get('format')!r}, this hpcmass reads {FORMAT!r}; predict "
                         f"with the hpcmass that exported it, or run the pipeline and export with this one")
    needed = manifest["models"] + ([manifest["domain"]["ood"]["file"]] if "ood" in manifest["domain"] else [])
    missing = [m for m in needed if not (path / m).exists()]
    if missing:
        raise InputError(f"{path}: file(s) missing: {', '.join(missing)}")
    return ModelBundle(path, manifest)
