"""Typed readers of the store's products, one per stage: what later stages, reports and predict read.

Each takes an open :class:`~hpcmass.store.core.Store` (``Store.read(workdir)``) and returns plain
numpy arrays and Python values, with the names of :mod:`.layout`. None of them checks that the
stage is complete: call ``store.require_complete(stage)`` first where every unit is needed.
A missing group or attribute raises :class:`~hpcmass.errors.StageError` naming it and the
command that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..images import at_exposure
from .core import Store
from .layout import DONE, LAYOUT
from .provenance import attr_value


def _group(store: Store, stage: str):
    if stage not in store.file:
        raise StageError(f"{store.path}: no /{stage} group; run `hpcmass {stage}` with this --workdir first")
    return store.file[stage]


def stage_attrs(store: Store, stage: str) -> dict:
    """Every attribute of ``/<stage>`` (provenance and the stage's own) as plain Python values."""
    return {k: attr_value(v) for k, v in _group(store, stage).attrs.items()}


def _attr(store: Store, stage: str, name: str):
    try:
        return attr_value(_group(store, stage).attrs[name])
    except KeyError:
        raise StageError(f"{store.path}: /{stage} lacks the attribute {name!r}; re-run `hpcmass {stage} "
                         f"--restart-from {stage}`") from None


def _datasets(store: Store, stage: str, names) -> dict[str, np.ndarray]:
    g = _group(store, stage)
    missing = [n for n in names if n not in g]
    if missing:
        raise StageError(f"{store.path}: /{stage} lacks {', '.join(missing)}; re-run `hpcmass {stage} "
                         f"--restart-from {stage}`")
    return {n: g[n][...] for n in names}


def unit_states(store: Store, stage: str) -> np.ndarray:
    """``/<stage>/done``: per-unit state (PENDING, DONE, FAILED)."""
    return _group(store, stage)["done"][...]


@dataclass(frozen=True)
class Catalog:
    """The /catalog table, one entry per cluster (store unit order).

    ``cutout[i]`` is an absolute path; ``center_ckpch[i]`` is in the cutout's box coordinates
    (GroupPos wrapped into [0, box_size_ckpch)), so a cluster near a box face has cells on both
    sides of it: select a sphere or box around the centre in yt (periodic domain) and pyXSIM
    re-joins it. ``columns`` holds every /catalog dataset by name (the measured L_X, T_X, ...).
    """

    cluster_id: np.ndarray
    log_m500c: np.ndarray
    r500c_kpc: np.ndarray
    center_ckpch: np.ndarray
    cutout: tuple[Path, ...]
    n_gas_cells: np.ndarray
    done: np.ndarray
    source: str
    box_size_ckpch: float
    hubble: float
    omega_m: float
    omega_lambda: float
    snapshot_redshift: float
    columns: dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.cluster_id)

    @property
    def cosmology(self) -> tuple[float, float, float]:
        """(h, Omega_m, Omega_Lambda) of the simulation, which pyXSIM also reads from each cutout."""
        return self.hubble, self.omega_m, self.omega_lambda


def load_catalog(store: Store | str | Path) -> Catalog:
    """The catalogue from an open store (or a workdir)."""
    if not isinstance(store, Store):
        with Store.read(store) as s:
            return load_catalog(s)
    g = _group(store, "catalog")
    workdir = store.path.parent
    cols = _datasets(store, "catalog", [n for n in LAYOUT["catalog"] if n in g])
    attr = {k: _attr(store, "catalog", k) for k in ("source", "box_size_ckpch", "hubble", "omega_m", "omega_lambda",
                                                     "snapshot_redshift")}
    return Catalog(
        cluster_id=cols["cluster_id"], log_m500c=cols["log_m500c"], r500c_kpc=cols["r500c_kpc"],
        center_ckpch=cols["center_ckpch"],
        cutout=tuple((workdir / p.decode()).resolve() if p else Path() for p in cols["cutout"]),
        n_gas_cells=cols["n_gas_cells"], done=unit_states(store, "catalog") == DONE, source=str(attr["source"]),
        box_size_ckpch=float(attr["box_size_ckpch"]), hubble=float(attr["hubble"]), omega_m=float(attr["omega_m"]),
        omega_lambda=float(attr["omega_lambda"]), snapshot_redshift=float(attr["snapshot_redshift"]), columns=cols)


@dataclass(frozen=True)
class Observations:
    """The observe stage's images and how they were made."""

    counts: np.ndarray  # (clusters, axes, bands, P, P) counts in each energy band
    bands_kev: tuple[tuple[float, float], ...]
    axes: tuple[str, ...]
    pixel_arcsec: float
    pixel_kpc: float
    redshift: float
    exposure_ks: float
    data_mode: str
    attrs: dict = field(repr=False)  # every /observe attribute
    #: (clusters, axes, P, P) fraction of the exposure each pixel was on the detector; None: all of it (the paper's)
    exposure: np.ndarray | None = None
    #: (clusters, axes) each projection's exposure [ks] (observe.exposure_range_ks); None: all exposure_ks long
    view_exposure_ks: np.ndarray | None = None

    @property
    def pixels(self) -> int:
        return int(self.counts.shape[-1])

    @property
    def broadband(self) -> np.ndarray:
        """(clusters, axes, P, P): the counts of all bands (contiguous: the broad band's image)."""
        return self.counts.sum(axis=2, dtype=self.counts.dtype)

    @property
    def network_input(self) -> np.ndarray:
        """(clusters, axes, bands, P, P): what the network is trained on and predicts, the counts scaled to
        ``exposure_ks`` when the projections' exposures differ, else the counts themselves."""
        if self.view_exposure_ks is None:
            return self.counts
        return at_exposure(self.counts, self.view_exposure_ks, self.exposure_ks)


def load_observations(store: Store) -> Observations:
    attrs = stage_attrs(store, "observe")
    counts = _datasets(store, "observe", ["images"])["images"]
    for name in ("pixel_arcsec", "pixel_kpc", "redshift", "exposure_ks", "data_mode", "bands_kev"):
        _attr(store, "observe", name)
    axes = tuple(str(attrs.get("axes", "xyz")).replace(",", ""))
    group = _group(store, "observe")
    return Observations(counts=counts, bands_kev=tuple(tuple(b) for b in attrs["bands_kev"]), axes=axes, pixel_arcsec=float(attrs["pixel_arcsec"]),
                        pixel_kpc=float(attrs["pixel_kpc"]), redshift=float(attrs["redshift"]),
                        exposure_ks=float(attrs["exposure_ks"]), data_mode=str(attrs["data_mode"]), attrs=attrs,
                        exposure=group["exposure"][...] if "exposure" in group else None,
                        view_exposure_ks=group["view_exposure_ks"][...] if "view_exposure_ks" in group else None)


def image_shape(store: Store) -> tuple[int, ...]:
    """``(clusters, axes, bands, P, P)`` of the observe stage's images, without reading them."""
    g = _group(store, "observe")
    if "images" not in g:
        raise StageError(f"{store.path}: /observe lacks images; re-run `hpcmass observe --restart-from observe`")
    return tuple(g["images"].shape)


def observe_data_mode(store: Store) -> str | None:
    """The X-ray data mode of the stored images, or None before the observe stage ran."""
    return _attr(store, "observe", "data_mode") if "observe" in store.file else None


def load_folds(store: Store) -> np.ndarray:
    """``/dataset/fold``: each cluster's cross-validation fold (int64)."""
    return _datasets(store, "dataset", ["fold"])["fold"].astype(np.int64)


@dataclass(frozen=True)
class Predictions:
    """The train stage's test-fold predictions and how each fold ended."""

    pred_log_m500c: np.ndarray  # (clusters, views) float64
    epoch_chosen: np.ndarray  # per fold: the epoch whose model was kept
    epochs_trained: np.ndarray  # per fold
    criteria_met: np.ndarray  # per fold: the paper's criteria at the kept epoch
    #: per-epoch records (folds, epochs), NaN after a fold's last epoch: "loss", "val_loss", "val_met"
    history: dict[str, np.ndarray]
    attrs: dict = field(repr=False)


def load_predictions(store: Store) -> Predictions:
    history = ["history_loss", "history_val_loss", "history_val_met"]
    d = _datasets(store, "train", ["pred_log_m500c", "epoch_chosen", "epochs_trained", "criteria_met", *history])
    return Predictions(pred_log_m500c=d["pred_log_m500c"].astype(np.float64), epoch_chosen=d["epoch_chosen"],
                       epochs_trained=d["epochs_trained"], criteria_met=d["criteria_met"],
                       history={n.removeprefix("history_"): d[n].astype(np.float64) for n in history},
                       attrs=stage_attrs(store, "train"))


@dataclass(frozen=True)
class Interpretation:
    """The interpret stage's arrays (by their LAYOUT names) and its geometry."""

    data: dict[str, np.ndarray]
    radial_edges_r500c: np.ndarray
    map_view: int
    attrs: dict = field(repr=False)


def load_interpretation(store: Store) -> Interpretation:
    attrs = stage_attrs(store, "interpret")
    return Interpretation(data=_datasets(store, "interpret", list(LAYOUT["interpret"])),
                          radial_edges_r500c=np.asarray(_attr(store, "interpret", "radial_edges_r500c")),
                          map_view=int(_attr(store, "interpret", "map_view")), attrs=attrs)
