"""Synthetic catalog generation speed: time per cluster and per million gas cells, by phase.

Run on demand (not a test): ``python benchmarks/bench_catalog.py [--clusters 12] [--params params/paper.yaml]``.
For each cell mass it generates the first ``--clusters`` clusters of the params' sample
serially and splits the time into the model (draw + profiles), cell sampling, the HDF5 write
and the loader's measurement; then it extrapolates to the whole sample of ``--params`` at its
own resolution (cell counts are known without sampling), to compare with a real run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcmass.catalog import generate as gen
from hpcmass.catalog import physics as ph
from hpcmass.catalog import tng
from hpcmass.catalog.stage import resolution, synthetic_models
from hpcmass.params import load_params


def bench(models, res: gen.Resolution, seed: int, box: float, workdir: Path) -> dict:
    t = dict.fromkeys(("model", "sample", "write", "measure"), 0.0)
    cells = size = 0
    t0 = time.perf_counter()
    gen.write_synthetic_group_catalog(workdir, models, res, box)
    inputs = tng.open_inputs(workdir, 99, tng.Selection("m500c", 12.0, 16.0))
    t["model"] += time.perf_counter() - t0
    for i, m in enumerate(models):
        t0 = time.perf_counter()
        prof = ph.profiles(m)
        t1 = time.perf_counter()
        gas = gen.to_tng(m, gen.sample_cells(m, prof, res, seed), box)
        t2 = time.perf_counter()
        path = tng.cutout_path(workdir, i)
        header = tng.snapshot_header(n_gas=len(gas["Masses"]), box_size=box)
        tng.write_cutout(path, header, gas)
        t3 = time.perf_counter()
        tng.measure_cluster(path, inputs, i)
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += dt
        cells += len(gas["Masses"])
        size += path.stat().st_size
        path.unlink()
    return {"cells": cells, "bytes": size, **t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/paper.yaml")
    ap.add_argument("--clusters", type=int, default=12)
    ap.add_argument("--cell-mass", type=float, nargs="+", default=[1e9, 3e8, 5e7])
    a = ap.parse_args()
    params = load_params(a.params)
    cp = params.catalog
    t0 = time.perf_counter()
    models = synthetic_models(params)
    t_draw = time.perf_counter() - t0
    subset = models[: a.clusters]
    print(f"{a.params}: {len(models)} clusters drawn in {t_draw:.2f} s; timing the first {len(subset)} "
          f"(log M500c {min(m.log_m500c for m in subset):.2f}-{max(m.log_m500c for m in subset):.2f})")
    print(f"{'cell Msun':>10} {'cells/cl':>9} {'s/cluster':>9} {'s/Mcell':>8} {'model':>6} {'sample':>6} "
          f"{'write':>6} {'measure':>7} {'MB/Mcell':>8}")
    rates = {}
    for cell_mass in a.cell_mass:
        res = gen.Resolution(cell_mass, cp.max_gas_cells, cp.r_max_r500)
        with tempfile.TemporaryDirectory() as tmp:
            r = bench(subset, res, params.run.seed, cp.box_size_ckpch, Path(tmp))
        total = sum(r[k] for k in ("model", "sample", "write", "measure"))
        mcell = r["cells"] / 1e6
        rates[cell_mass] = (total / mcell, r["bytes"] / r["cells"])
        print(f"{cell_mass:10.2e} {r['cells'] / len(subset):9.0f} {total / len(subset):9.3f} {total / mcell:8.2f} "
              f"{r['model'] / total:6.0%} {r['sample'] / total:6.0%} {r['write'] / total:6.0%} "
              f"{r['measure'] / total:7.0%} {r['bytes'] / mcell / 1e6:8.1f}")
    res = resolution(params)
    n = np.array([gen.cell_plan(m, ph.profiles(m), res).total for m in models])
    s_per_mcell, bytes_per_cell = rates[min(rates, key=lambda c: abs(np.log(c / res.cell_mass)))]
    print(f"\n{a.params} at its own resolution ({res.cell_mass:.2e} Msun, max {res.max_cells} cells): "
          f"{n.sum() / 1e6:.1f} M cells (median {np.median(n):.0f}, max {n.max()}); estimated "
          f"{n.sum() / 1e6 * s_per_mcell:.0f} s on one rank, {n.sum() * bytes_per_cell / 1e9:.2f} GB of cutouts "
          f"(rate of the nearest cell mass above)")


if __name__ == "__main__":
    main()
