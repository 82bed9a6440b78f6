"""Training throughput against this machine's own limit: bare fit, hpcmass's pipeline, 1 and 2 ranks.

Machines of the same kind differ by 4× in training speed, so every rate is printed beside the
machine (cores, vector width) and as a fraction of a **limit measured at the start of the run**:
an all-cores float32 matmul rate (GFLOP/s) divided by the CNN's cost per training image (its
multiply-adds counted from the model's layers, ×2 FLOP, ×3 for forward, input-gradient and
weight-gradient passes). Rows, all images/s:

- bare ``model.fit`` on all 24 views precomputed in memory (what published CNN-mass examples do);
- hpcmass's tf.data pipeline (views made on the fly from the 3 stored projections: 8× less
  memory); target ≥ 0.9× the bare fit. The two take turns epoch by epoch in one process;
- ``mpirun -n 1`` and ``mpirun -n 2`` of the pipeline, each rank training its own model with
  the threads :func:`hpcmass.cpu.configure_tensorflow` gives it (what ``hpcmass train`` does with
  one fold per rank); target: 2 ranks ≥ 1.6× one rank;
- the pipeline in one rank with TensorFlow's default CPU kernels (``TF_ENABLE_ONEDNN_OPTS=0``), to
  show what the oneDNN switch in :mod:`hpcmass` buys on this machine;
- ``--stack K`` folds stacked in one process (``train.stack_folds``: one model of K towers, every
  core), taking turns with the two above; it counts all K folds' images.

Then inference, and paper-scale projections (329 clusters, 128 px: 263 training and 33 validation
clusters × 24 views per epoch). With ``--workdir`` (a store with catalog, observe and dataset
done, e.g. the demo's) one real fold is also trained and timed.

    source jobs/env.sh
    python benchmarks/bench_train.py [--clusters 24] [--pixels 128] [--epochs 5] [--repeats 2]
                                     [--stack 2] [--workdir runs/demo --params params/demo.yaml]

This VM's speed comes in two modes (~110 and ~200 images/s per core for the same code, from
epoch to epoch), so each rate is the fastest of ``--epochs`` timed epochs after an untimed one,
and the mpirun runs take ``--repeats`` turns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import hpcmass  # noqa: E402,F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from hpcmass.images import N_VIEWS, make_views  # noqa: E402

PAPER_TRAIN, PAPER_VAL = 263 * N_VIEWS, 33 * N_VIEWS
PAPER_FOLDS, PAPER_EPOCHS = 10, 150
_VECTOR_FLAGS = ("avx512f", "avx2", "avx", "sse4_2", "asimd")


def machine() -> dict:
    """Cores this process may use, the widest vector extension, and an all-cores float32 matmul rate."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith(("flags", "Features")) for w in line.split(":")[1].split()}
    except OSError:
        pass
    n = 2048
    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(8))
    return {"cores": len(os.sched_getaffinity(0)), "vector": next((v for v in _VECTOR_FLAGS if v in flags), "unknown"),
            "fma": "fma" in flags, "gflops": 2 * n**3 / best / 1e9}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_flop_per_image(model) -> float:
    """3 × 2 × the multiply-adds of one forward pass (convolutions and dense layers)."""
    import tf_keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Conv2D):
            _, h, w, c_out = layer.output_shape
            kh, kw, c_in, _ = layer.kernel.shape
            macs += h * w * c_out * kh * kw * c_in
        elif isinstance(layer, tf_keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 3 * 2 * macs


def synthetic(clusters: int, pixels: int):
    rng = np.random.default_rng(0)
    return rng.poisson(5.0, (clusters, 3, 1, pixels, pixels)).astype(np.int32), rng.uniform(13.6, 15.0, clusters)


def fresh_model(pixels):
    import tf_keras

    from hpcmass.train.distributed import Group
    from hpcmass.train.fold import compile_model
    from hpcmass.train.model import build_model

    tf_keras.utils.set_random_seed(1)
    model = build_model(pixels, "log1p", seed=1)
    compile_model(model, Group(), 5e-4)
    return model


def rates(variants: dict, epochs: int) -> dict:
    """Best images/s of each variant (name: (one epoch's function, its images)) over ``epochs``
    epochs, after one untimed epoch (tracing).

    The variants take turns epoch by epoch, so a load that comes and goes hits them alike.
    """
    for fit_epoch, _ in variants.values():
        fit_epoch(0)
    times = {name: [] for name in variants}
    for e in range(1, epochs + 1):
        for name, (fit_epoch, _) in variants.items():
            times[name].append(_timed(lambda: fit_epoch(e)))
    return {name: variants[name][1] / min(t) for name, t in times.items()}


def pipeline_epochs(source, ids, batch: int):
    from hpcmass.train.pipeline import epoch_order

    model = fresh_model(source.pixels)
    return lambda e: model.fit(source.dataset(epoch_order(ids, 1, 0, e), batch), epochs=1, verbose=0)


def stacked_epochs(source, ids, batch: int, k: int):
    """K folds' towers in one model (train.stack_folds), each fold with its own epoch order."""
    from hpcmass.train.pipeline import epoch_order
    from hpcmass.train.stack import Stack, dropout_seeds, epoch_batches

    towers = Stack([fresh_model(source.pixels).get_weights() for _ in range(k)], [None] * k, "log1p", 5e-4)
    return lambda e: towers.train_epoch(epoch_batches(source, [epoch_order(ids, 1, f, e) for f in range(k)],
                                                      [dropout_seeds(1, f, e) for f in range(k)], batch))


def worker(a) -> None:
    """One rank of ``mpirun -n R bench_train.py --worker``: its own model on its own cores."""
    from mpi4py import MPI

    from hpcmass.cpu import configure_tensorflow
    from hpcmass.train.pipeline import ViewSource, view_ids

    comm = MPI.COMM_WORLD
    threads = configure_tensorflow(comm, working=True)
    images, log_m = synthetic(a.clusters, a.pixels)
    source = ViewSource(images, log_m)
    rate = rates({"pipe": (pipeline_epochs(source, view_ids(np.arange(a.clusters), N_VIEWS), a.batch),
                           a.clusters * N_VIEWS)}, a.epochs)["pipe"]
    per_rank = comm.gather((rate, threads), root=0)
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps({"rates": [r for r, _ in per_rank], "threads": [t for _, t in per_rank]}))


def ranks_rate(a, ranks: int, **env) -> dict:
    """Run the worker under ``mpirun -n ranks`` (OpenMPI's default binding); its summed rate."""
    cmd = ["mpirun", "-n", str(ranks), *(flag for k in env for flag in ("-x", k)), sys.executable, __file__, "--worker",
           "--clusters", str(a.clusters), "--pixels", str(a.pixels), "--batch", str(a.batch), "--epochs", str(a.epochs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode or line is None:
        sys.exit(f"bench_train: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    got = json.loads(line[len("RESULT "):])
    return {"total": sum(got["rates"]), **got}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=24, help="training clusters (× 24 views)")
    ap.add_argument("--pixels", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per variant (the fastest counts)")
    ap.add_argument("--repeats", type=int, default=2, help="turns of the three mpirun runs (the best counts)")
    ap.add_argument("--stack", type=int, default=2, help="folds stacked in one process")
    ap.add_argument("--workdir", help="also train one fold of this store and time it")
    ap.add_argument("--params", help="params of that store")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    m = machine()
    import tensorflow as tf

    from hpcmass.train.model import predict_log_m500c
    from hpcmass.train.pipeline import ViewSource, view_ids

    images, log_m = synthetic(a.clusters, a.pixels)
    n = a.clusters * N_VIEWS
    model = fresh_model(a.pixels)
    flop = train_flop_per_image(model)
    limit = m["gflops"] * 1e9 / flop
    print(f"machine: {m['cores']} core(s), {m['vector']}{'+fma' if m['fma'] else ''}, float32 matmul "
          f"{m['gflops']:.0f} GFLOP/s on all cores; TensorFlow {tf.__version__}, "
          f"GPU: {len(tf.config.list_physical_devices('GPU'))}, TF_ENABLE_ONEDNN_OPTS="
          f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS')}")
    print(f"the CNN: {flop / 1e6:.0f} MFLOP per training image -> limit {limit:.0f} images/s on this machine")
    print(f"{a.clusters} clusters × {N_VIEWS} views = {n} images of {a.pixels}² px, batch {a.batch}, "
          f"best of {a.epochs} timed epochs")

    source = ViewSource(images, log_m)
    ids = view_ids(np.arange(a.clusters), N_VIEWS)
    x = tf.constant(make_views(images).reshape(n, 1, a.pixels, a.pixels).astype(np.float32))
    y = tf.constant(np.repeat(log_m, N_VIEWS).astype(np.float32))
    r = rates({"pipe": (pipeline_epochs(source, ids, a.batch), n),
               "bare": (lambda e: model.fit(x, y, batch_size=a.batch, shuffle=True, epochs=1, verbose=0), n),
               "stacked": (stacked_epochs(source, ids, a.batch, a.stack), a.stack * n)}, a.epochs)
    alone = n / _timed(lambda: sum(1 for _ in source.dataset(ids, a.batch)))
    views = x.numpy()
    predict_log_m500c(model, views[: a.batch])  # trace the predict function
    infer = n / _timed(lambda: predict_log_m500c(model, views))
    # The three mpirun runs take turns, --repeats times, and each keeps its best: a slow spell of
    # the machine then cannot land on one of them alone.
    runs = {"one": lambda: ranks_rate(a, 1), "two": lambda: ranks_rate(a, 2),
            "default_kernels": lambda: ranks_rate(a, 1, TF_ENABLE_ONEDNN_OPTS="0")}
    got = {name: [] for name in runs}
    for _ in range(a.repeats):
        for name, run in runs.items():
            got[name].append(run())
    one, two, default_kernels = (max(got[name], key=lambda g: g["total"]) for name in runs)

    def row(name, rate, note=""):
        print(f"{name:44}{rate:9.0f}{rate / limit:9.0%}   {note}")

    print(f"{'':44}{'images/s':>9}{'of limit':>9}")
    row("bare model.fit, in-memory views", r["bare"])
    row("hpcmass tf.data pipeline (one process)", r["pipe"], f"pipeline/bare {r['pipe'] / r['bare']:.2f} (target >= 0.9)")
    row(f"{a.stack} folds stacked, one process", r["stacked"], f"stacked/pipeline {r['stacked'] / r['pipe']:.2f}")
    row("mpirun -n 1, pipeline", one["total"], f"{one['threads'][0]} thread(s)")
    row("mpirun -n 2, pipeline, one model per rank", two["total"],
        f"threads {two['threads']}; 2 ranks / 1 rank {two['total'] / one['total']:.2f} (target >= 1.6), "
        f"/ one process {two['total'] / r['pipe']:.2f}")
    row("mpirun -n 1, TF's default kernels (no oneDNN)", default_kernels["total"],
        f"oneDNN gives {one['total'] / default_kernels['total']:.2f}x")
    row("  the pipeline alone (no model)", alone)
    row("  inference (validation/test views)", infer)
    best = max(r["pipe"], r["stacked"], two["total"])
    epoch_s = PAPER_TRAIN / best + PAPER_VAL / infer
    print(f"paper scale ({PAPER_TRAIN} training + {PAPER_VAL} validation images per epoch) at the best rate "
          f"({best:.0f} images/s): {epoch_s:.1f} s/epoch -> one fold of {PAPER_EPOCHS} epochs "
          f"{PAPER_EPOCHS * epoch_s / 3600:.2f} h; all {PAPER_FOLDS} folds on this machine "
          f"{PAPER_FOLDS * PAPER_EPOCHS * epoch_s / 3600:.1f} h, or one fold's time as {PAPER_FOLDS} array tasks")
    print(f"in-memory views: {views.nbytes / 2**20:.0f} MiB bare vs {images.nbytes / 2**20:.0f} MiB projections")

    if a.workdir:
        from hpcmass.params import load_params
        from hpcmass.train.fold import train_fold
        from hpcmass.train.stage import read_inputs

        params = load_params(a.params)
        imgs, lm, folds = read_inputs(a.workdir, a.params)
        scratch = os.path.join(a.workdir, "bench_train")  # never the run's own checkpoints
        shutil.rmtree(scratch, ignore_errors=True)  # time a whole fold, not a resumed one
        t0 = time.perf_counter()
        res = train_fold(a.fold, imgs, lm, folds, params, scratch)
        wall = time.perf_counter() - t0
        print(f"fold {a.fold} of {a.workdir}: {res.epoch_chosen} epochs "
              f"({'criteria met' if res.criteria_met else 'criteria not met'}), {wall:.1f} s wall, "
              f"{wall / max(res.epoch_chosen, 1):.2f} s/epoch (files in {scratch})")


if __name__ == "__main__":
    main()
