"""Reading the catalog stage's table: what later stages need to find and centre each cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..store import DONE, Store


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
    snapshot_redshift: float
    columns: dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.cluster_id)


def load_catalog(store: Store | str | Path) -> Catalog:
    """The catalogue from an open :class:`~hpcmass.store.Store` (or a workdir). Does not check completeness:
    call ``store.require_complete("catalog")`` first where every cluster is needed."""
    if not isinstance(store, Store):
        with Store.read(store) as s:
            return load_catalog(s)
    g = store.file["catalog"]
    workdir = store.path.parent
    cols = {name: g[name][...] for name in g if name not in ("done", "error")}
    return Catalog(
        cluster_id=cols["cluster_id"], log_m500c=cols["log_m500c"], r500c_kpc=cols["r500c_kpc"],
        center_ckpch=cols["center_ckpch"],
        cutout=tuple((workdir / p.decode()).resolve() if p else Path() for p in cols["cutout"]),
        n_gas_cells=cols["n_gas_cells"], done=g["done"][...] == DONE, source=str(g.attrs["source"]),
        box_size_ckpch=float(g.attrs["box_size_ckpch"]), hubble=float(g.attrs["hubble"]),
        omega_m=float(g.attrs["omega_m"]), snapshot_redshift=float(g.attrs["snapshot_redshift"]), columns=cols)
