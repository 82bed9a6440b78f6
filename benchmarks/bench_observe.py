"""Benchmark the observe stage against a plain serial pyXSIM + SOXS loop (run on demand, not a test).

One synthetic sample over the paper's mass range (coarser gas cells than TNG300, so it runs in
minutes), observed three ways in the same run:

1. a plain serial loop of the pyXSIM and SOXS calls a user would write (same calls, seeds and
   binning as hpcmass, so the images must be identical);
2. ``hpcmass observe`` on 1 rank and 3. on 2 ranks (mpirun).

Printed: the per-cluster cost split (load / photons / projection / instrument), photons per
core-second, throughput at 1 vs 2 ranks (target >= 1.85x), the 2-rank makespan against the bound
total cost / ranks + largest task (target <= 1.10x), peak memory per rank, and a projection of
the cost of the paper's 329 clusters at TNG300 resolution from a fit of cost to cells and photons.

    .venv/bin/python benchmarks/bench_observe.py [--clusters 10] [--cell-mass 1e9] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("load", "photons", "projection", "instrument")


def _env(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "HPCMASS_PROGRESS": "0",
                "XDG_CONFIG_HOME": str(workdir / "xdg"), "PYTHONPATH": str(ROOT)})
    return env


def _run(cmd: list, workdir: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env(workdir), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stderr


# --- 1. the plain loop a user would write --------------------------------------------------------


def plain_loop(workdir: Path, params_args: list[str]) -> None:
    """Serial pyXSIM + SOXS over the catalog; writes images.npy and timing.json into workdir."""
    from hpcmass.observe import approx, xray
    from hpcmass.params import load_params
    from hpcmass.seeding import int_seed

    p_all = load_params(params_args[0], params_args[1:])
    p = p_all.observe
    # Data files and instrument: the same set-up a user would do by hand (approximate data offline).
    tmp = Path(tempfile.mkdtemp(prefix="plain-loop-"))
    data = xray.resolve_data(p, workdir / "observe" / "approx", tmp / "config")
    soxs = xray.import_soxs(data, tmp / "config")
    if data.mode == "approximate":
        approx.write_approx_files(workdir / "observe" / "approx")
    instrument = xray.register_instrument(p, data)
    area = xray.arf_peak_area(data)
    import pyxsim
    import yt
    from astropy.io import fits

    yt.set_log_level(40)

    def hot(pfilter, d):
        return (d[pfilter.filtered_type, "temperature"].to_value("K") > p.kt_min_kev * 1.160452e7) & (
            d[pfilter.filtered_type, "star_formation_rate"].d == 0)

    yt.add_particle_filter("hot_gas", function=hot, filtered_type="gas", requires=["temperature", "star_formation_rate"])
    with h5py.File(workdir / "store.h5", "r") as f:
        c = f["catalog"]
        ids, r500, centers, cutouts = c["cluster_id"][...], c["r500c_kpc"][...], c["center_ckpch"][...], c["cutout"][...]
    sky = (30.0, 45.0)
    images, times = [], []
    cpu0 = time.process_time()
    for cid, r5, cen, cut in zip(ids, r500, centers, cutouts, strict=True):
        t0 = time.perf_counter()
        ds = yt.load(str(workdir / cut.decode()))
        ds.add_particle_filter("hot_gas")
        center = ds.arr(cen, "code_length")
        d_a = ds.cosmology.angular_diameter_distance(0.0, p.redshift).to_value("kpc")
        half = ds.quan(max(d_a * np.deg2rad(p.fov_arcmin / 60) / np.sqrt(2), p.region_r500 * r5), "kpc").to("code_length")
        half = min(half, 0.5 * ds.domain_width.min())
        model = pyxsim.CIESourceModel("apec", p.spectrum_emin_kev, p.spectrum_emax_kev, p.spectrum_bins,
                                      ("hot_gas", "metallicity"), temperature_field=("hot_gas", "temperature"),
                                      emission_measure_field=("hot_gas", "emission_measure"), kT_min=p.kt_min_kev,
                                      abund_table=p.abund_table, model_vers=data.apec_version,
                                      model_root=data.soxs_data_dir, prng=int_seed(p_all.run.seed, "observe", int(cid),
                                                                                   "photons"))
        n_ph, _ = pyxsim.make_photons(str(tmp / "ph"), ds.box(center - half, center + half), p.redshift, area,
                                      (p.exposure_ks, "ks"), model, center=center)
        per_axis = []
        for ax in p.axes:
            prng = np.random.default_rng(int_seed(p_all.run.seed, "observe", int(cid), ax))
            src = None
            if n_ph and pyxsim.project_photons(str(tmp / "ph"), str(tmp / "ev"), ax, sky, absorb_model=p.absorb_model,
                                               nH=p.nh_1e22, prng=prng):
                pyxsim.EventList(str(tmp / "ev.h5")).write_to_simput(str(tmp / "src"), overwrite=True)
                src = str(tmp / "src_simput.fits")
            soxs.instrument_simulator(src, str(tmp / "evt.fits"), (p.exposure_ks, "ks"), instrument, sky,
                                      overwrite=True, instr_bkgnd=p.particle_background, foreground=data.foreground,
                                      ptsrc_bkgnd=p.point_sources, prng=prng)
            with fits.open(tmp / "evt.fits") as h:
                ev, hd = h["EVENTS"].data, h["EVENTS"].header
                e = ev["ENERGY"].astype(float) / 1e3
                keep = (e >= p.emin_kev) & (e < p.emax_kev)
                half_pix = p.fov_arcmin / 60 / abs(hd["TCDLT2"]) / 2
                cx, cy = hd["TCRPX2"], hd["TCRPX3"]
                img, _, _ = np.histogram2d(ev["Y"][keep], ev["X"][keep], bins=p.image_pixels,
                                           range=[[cy - half_pix, cy + half_pix], [cx - half_pix, cx + half_pix]])
            per_axis.append(img.astype(np.int32))
        images.append(per_axis)
        times.append(time.perf_counter() - t0)
    np.save(workdir / "plain_images.npy", np.array(images))
    (workdir / "plain_timing.json").write_text(json.dumps({
        "seconds": times, "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    shutil.rmtree(tmp, ignore_errors=True)


# --- 2. hpcmass at N ranks -----------------------------------------------------------------------


def hpcmass_run(base: Path, dest: Path, ranks: int, params_args: list[str]) -> dict:
    shutil.copytree(base, dest)
    wall, _ = _run(["mpirun", "-n", ranks, "-x", "PYTHONPATH", "-x", "XDG_CONFIG_HOME", sys.executable, "-m",
                    "hpcmass", "observe", "--workdir", dest, "--params", *_param_flags(params_args)], dest)
    with h5py.File(dest / "store.h5", "r") as f:
        o = f["observe"]
        return {"wall": wall, "images": o["images"][...], "seconds": o["seconds"][...],
                "n_photons": o["n_photons"][...], "ranks": json.loads(o.attrs["last_run_rank_stats"]),
                "cells": f["catalog/n_gas_cells"][...], "log_m": f["catalog/log_m500c"][...]}


def _param_flags(params_args: list[str]) -> list[str]:
    out = [params_args[0]]
    for s in params_args[1:]:
        out += ["--set", s]
    return out


# --- 3. projection to the paper's sample ---------------------------------------------------------


def paper_projection(cost: np.ndarray, cells: np.ndarray, photons: np.ndarray, log_m: np.ndarray,
                     photon_scale: float, overrides: list[str]) -> dict:
    """Fit cost = a + b cells + c photons (all >= 0) and photons = A M^s; apply to params/paper.yaml's
    sample (with ``overrides``), photons scaled by ``photon_scale`` (100 ks over the benchmark's exposure)."""
    from scipy.optimize import nnls

    from hpcmass.catalog import generate as gen
    from hpcmass.catalog import physics as ph
    from hpcmass.catalog.stage import resolution, synthetic_models
    from hpcmass.params import load_params

    coef, _ = nnls(np.column_stack([np.ones_like(cost), cells, photons]), cost)
    slope, icpt = np.polyfit(log_m, np.log10(photons), 1)
    paper = load_params(ROOT / "params/paper.yaml", overrides)
    models = synthetic_models(paper)
    res = resolution(paper)
    p_cells = np.array([gen.cell_plan(m, ph.profiles(m), res).total for m in models], dtype=float)
    p_logm = np.array([m.log_m500c for m in models])
    p_photons = 10 ** (icpt + slope * p_logm) * photon_scale
    p_cost = coef[0] + coef[1] * p_cells + coef[2] * p_photons
    return {"coef": coef, "photon_slope": slope, "n": len(models), "cells": p_cells, "cost": p_cost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--cell-mass", type=float, default=1e9, help="gas cell mass [Msun] (TNG300: 1.1e7)")
    ap.add_argument("--max-cells", type=int, default=200_000)
    ap.add_argument("--exposure-ks", type=float, default=100.0)
    ap.add_argument("--pixels", type=int, default=128)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    ap.add_argument("--plain", type=Path, help=argparse.SUPPRESS)  # internal: run the plain loop in this workdir
    ap.add_argument("--params-args", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        plain_loop(args.plain, args.params_args)
        return
    top = args.workdir or Path(tempfile.mkdtemp(prefix="bench-observe-"))
    top.mkdir(parents=True, exist_ok=True)
    params_args = [str(ROOT / "params/paper.yaml"), f"catalog.n_clusters={max(args.clusters, 10)}",
                   f"catalog.cell_mass_msun={args.cell_mass}", f"catalog.max_gas_cells={args.max_cells}",
                   f"observe.exposure_ks={args.exposure_ks}", f"observe.image_pixels={args.pixels}"]
    base = top / "catalog"
    if not (base / "store.h5").exists():
        _run([sys.executable, "-m", "hpcmass", "catalog", "--workdir", base, "--params", *_param_flags(params_args)], base)

    print(f"observe benchmark: {max(args.clusters, 10)} synthetic clusters over the paper's mass range, cell mass "
          f"{args.cell_mass:.3g} Msun, {args.exposure_ks:g} ks, {args.pixels}x{args.pixels}, "
          f"{os.cpu_count()} cores; workdir {top}")
    plain_dir = top / "plain"
    shutil.rmtree(plain_dir, ignore_errors=True)
    shutil.copytree(base, plain_dir)
    plain_wall, _ = _run([sys.executable, __file__, "--plain", plain_dir, "--params-args", *params_args], plain_dir)
    plain = json.loads((plain_dir / "plain_timing.json").read_text())
    runs = {}
    for k in args.ranks:
        shutil.rmtree(top / f"ranks{k}", ignore_errors=True)
        runs[k] = hpcmass_run(base, top / f"ranks{k}", k, params_args)
    one = runs[min(runs)]
    cost = one["seconds"].sum(axis=1)
    cells, photons = one["cells"], one["n_photons"]

    print("\nper cluster (from the 1-rank run):")
    print(f"  {'log M500c':>9} {'cells':>8} {'photons':>10} " + " ".join(f"{p:>10}" for p in PARTS) + f" {'total s':>8}")
    for j in np.argsort(-cost):
        print(f"  {one['log_m'][j]:9.2f} {cells[j]:8d} {photons[j]:10d} "
              + " ".join(f"{v:10.2f}" for v in one["seconds"][j]) + f" {cost[j]:8.2f}")
    share = one["seconds"].sum(axis=0) / cost.sum()
    print("  cost split: " + ", ".join(f"{p} {100 * s:.0f}%" for p, s in zip(PARTS, share, strict=True)))
    print(f"  photons per core-second (photon generation): {photons.sum() / one['seconds'][:, 1].sum():,.0f}")

    print("\nplain serial pyXSIM + SOXS loop vs hpcmass:")
    same = all(np.array_equal(np.load(plain_dir / "plain_images.npy"), r["images"]) for r in runs.values())
    print(f"  plain loop: {sum(plain['seconds']):7.1f} s in the loop ({plain['cpu_s']:.1f} s CPU; hpcmass 1 rank: "
          f"{sum(s['cpu_s'] for s in one['ranks']):.1f} s CPU), {plain_wall:6.1f} s end to end, "
          f"peak {plain['peak_rss_mb']:.0f} MB")
    bound_base = cost.sum()
    for k, r in sorted(runs.items()):
        makespan = max(s["busy_s"] for s in r["ranks"])
        bound = bound_base / k + cost.max()
        speed = max(s["busy_s"] for s in one["ranks"]) / makespan
        # The same in CPU time: what the schedule achieves when other work shares the cores.
        cpu_speed = max(s["cpu_s"] for s in one["ranks"]) / max(s["cpu_s"] for s in r["ranks"])
        mem = ", ".join(f"{s['peak_rss_mb']:.0f}" for s in r["ranks"])
        cpu = sum(s["cpu_s"] for s in r["ranks"]) / sum(s["busy_s"] for s in r["ranks"])
        print(f"  hpcmass {k} rank(s): makespan {makespan:7.1f} s ({speed:.2f}x the 1-rank run"
              f"{', target >= 1.85x' if k == 2 else ''}), {r['wall']:6.1f} s end to end; bound "
              f"{bound:.1f} s -> makespan/bound {makespan / bound:.2f} (target <= 1.10); CPU/wall per rank "
              f"{cpu:.2f} (< 1: cores shared with other work), CPU-time speed-up {cpu_speed:.2f}x; "
              f"peak MB per rank: {mem}")
    print(f"  images identical (plain loop, every rank count): {same}")

    for label, overrides in (("params/paper.yaml as configured", []),
                             ("TNG300-1 resolution (1.1e7 Msun cells, no cap)",
                              ["catalog.cell_mass_msun=1.1e7", "catalog.max_gas_cells=1000000000"])):
        proj = paper_projection(cost, cells.astype(float), photons.astype(float), one["log_m"],
                                100.0 / args.exposure_ks, overrides)
        a, b, c = proj["coef"]
        print(f"\nprojection to {proj['n']} clusters, {label}, 100 ks, from the fit cost = {a:.2f} s + "
              f"{b * 1e6:.2f} s/Mcell + {c * 1e6:.2f} s/Mphoton (photons ~ M^{proj['photon_slope']:.2f}):")
        print(f"  cells per cluster: median {np.median(proj['cells']):,.0f}, max {proj['cells'].max():,.0f}; "
              f"cost per cluster: median {np.median(proj['cost']):.0f} s, max {proj['cost'].max():.0f} s")
        print(f"  total {proj['cost'].sum() / 3600:.1f} core-hours; at 64 ranks the makespan bound is "
              f"{(proj['cost'].sum() / 64 + proj['cost'].max()) / 60:.1f} min")
    if not args.workdir:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
