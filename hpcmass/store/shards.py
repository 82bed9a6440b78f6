"""Per-rank shard files, for runs whose h5py lacks MPI (or with HPCMASS_STORE_SHARDS=1).

Each rank writes ``<workdir>/<stage>/shards/<stage>-<run>-r<rank>.h5`` with the stage group's
layout; rank 0 joins the shards' finished units into the store as HDF5 virtual datasets at the
end of the stage (and at the start of the next run, so a killed run's units count).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .layout import DONE, FAILED, LAYOUT


def parallel_hdf5() -> bool:
    return bool(h5py.get_config().mpi)


def sharded(comm) -> bool:
    """Whether this run writes per-rank shard files instead of one parallel file."""
    if comm is None or comm.Get_size() == 1:
        return False
    return not parallel_hdf5() or os.environ.get("HPCMASS_STORE_SHARDS") == "1"


def _per_unit(stage: str, name: str) -> bool:
    """Whether a dataset's first axis is the stage's unit (undeclared datasets: assumed so)."""
    spec = LAYOUT.get(stage, {}).get(name)
    return spec is None or spec[0][:1] == ("n",)


def join_shards(f: h5py.File, stage: str, shard_dir: Path, log) -> None:
    """Map every finished unit of every shard into the store's datasets (virtual), then its flags."""
    g = f[stage]
    states, errors = g["done"][...], g["error"][...]
    sources: dict[str, list] = {}
    for shard in sorted(shard_dir.glob(f"{stage}-*.h5")):
        try:
            sf = h5py.File(shard, "r")
        except OSError:
            if log:
                log.warning("%s is unreadable (a rank was killed while creating it); its units will be redone", shard)
            continue
        with sf:
            sg = sf[stage]
            shard_states = sg["done"][...]
            finished = np.flatnonzero(shard_states == DONE)
            failed = np.flatnonzero((shard_states == FAILED) & (states != DONE))
            errors[failed] = sg["error"][...][failed]
            states[failed] = FAILED
            states[finished], errors[finished] = DONE, b""
            rel = os.path.relpath(shard, Path(f.filename).parent)
            for name, ds in sg.items():
                # Whole-stage products (no unit axis) are written into the store itself after the join.
                if name not in ("done", "error") and _per_unit(stage, name):
                    sources.setdefault(name, []).append((rel, shard, ds.shape, ds.dtype, finished))
    for name, srcs in sources.items():
        shape, dtype = srcs[0][2], srcs[0][3]
        if name in g and not g[name].is_virtual:
            # Written by an earlier parallel run of this stage: copy the shards' units in.
            for _, shard, _, _, units in srcs:
                with h5py.File(shard, "r") as sf:
                    for u in units:
                        g[name][u] = sf[stage][name][u]
            continue
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for rel, _, shp, _, units in srcs:
            source = h5py.VirtualSource(rel, f"{stage}/{name}", shape=shp)
            for u in units:
                layout[u] = source[u]
        if name in g:
            del g[name]
        g.create_virtual_dataset(name, layout, fillvalue=np.zeros((), dtype)[()])  # typed: 0 or b"" (S256 paths)
    f.flush()
    g["done"][...], g["error"][...] = states, errors
    f.flush()
