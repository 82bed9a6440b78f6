"""The paper's CNN on one GPU: one fold alone against ten folds stacked (``train.stack_folds``).

The GPU machines lent to this project carry JAX, PyTorch and CUDA 13 but no TensorFlow, and
TensorFlow 2.18 (a ~600 MB wheel, plus CUDA 12 libraries) is far past what can be carried there.
So this benchmark times the computation of :mod:`hpcmass.train.stack` written in JAX: the paper's
layers per tower (log1p scaling, valid 3×3 convolutions, 2×2 pooling, global average pooling,
dropout 0.1 before dense200 and dense100), a mean-square loss, Adam per fold (optax, lr 5e-4,
eps 1e-7), batches of 32 per fold. Folds are stacked with ``jax.vmap`` over the fold axis, which
XLA lowers to the same grouped convolutions and batched matrix products as ``stack.forward``. It
measures what one GPU does with the suite's training shape, not hpcmass's TensorFlow code there.

Weights are in Keras's ``get_weights()`` order, so the port is checked against the suite:
``--write-reference ref.npz`` (hpcmass's environment, TensorFlow) saves stacked random weights,
counts and ``stack.forward``'s predictions; ``--check ref.npz`` (JAX) compares its forward with them.

Paper scale per fold and epoch: 263 training and 33 validation clusters × 24 views (the 8 flips and
quarter turns of 3 projections, ``hpcmass.images.make_views``) of 128×128 Poisson counts, all on the
device (stacked, each fold's validation is cut to the smallest fold's 32 clusters). Rows: each
path (a Python loop of jitted steps, as the suite's training loop runs; one ``lax.scan`` per
epoch) for K = 1 and K = 10 folds, the K = 10 towers also unrolled (K copies of one tower's ops
in one program instead of grouped convolutions) and at full float32; training images/s
(validation prediction included in each epoch's time), and the fraction of a limit from a float32
matmul measured at the start, as ``bench_train.py`` does on CPU. Then the paper-scale projection:
10 folds one after another against 10 stacked, 150 epochs each. Needs jax and optax.

    python benchmarks/bench_gpu.py [--stack 10] [--epochs 3] [--clusters 329] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpcmass.images import N_VIEWS, make_views  # noqa: E402  (numpy only)

PIXELS, BATCH, DROPOUT, LEARNING_RATE = 128, 32, 0.1, 5e-4
PAPER_FOLDS, PAPER_EPOCHS = 10, 150
#: The paper model's kernels' shapes, Keras order (bias arrays follow each): conv1-3, dense200, 100, 20, 1.
KERNELS = [(3, 3, 1, 16), (3, 3, 16, 32), (3, 3, 32, 64), (64, 200), (200, 100), (100, 20), (20, 1)]
PAPER_PARAMETERS = 58_437


def train_flop_per_image(pixels: int = PIXELS) -> float:
    """3 × 2 × the multiply-adds of one forward pass (valid convolutions, each followed by a 2×2 pool)."""
    macs, side = 0, pixels
    for shape in KERNELS:
        if len(shape) == 4:
            side -= 2
            macs += side * side * int(np.prod(shape))
            side //= 2
        else:
            macs += int(np.prod(shape))
    return 3 * 2 * macs


def init_weights(rng: np.random.Generator, k: int, output_bias: float = 14.3) -> list[np.ndarray]:
    """K towers' weights, Keras order: Glorot-uniform kernels, small biases (nonzero, so that the
    reference check sees them), the output bias near log10 M500c as ``FoldRun.initial_model`` sets it."""
    weights = []
    for shape in KERNELS:
        receptive = int(np.prod(shape[:-2]))  # 9 for a 3×3 kernel, 1 for a dense one
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        limit = np.sqrt(6 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, (k, *shape)).astype(np.float32))
        weights.append(rng.uniform(-0.05, 0.05, (k, shape[-1])).astype(np.float32))
    weights[-1] += output_bias
    return weights


def write_reference(path: str) -> None:
    """Stacked weights, raw counts and hpcmass's ``stack.forward`` predictions (needs TensorFlow)."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from hpcmass.train.stack import forward

    rng = np.random.default_rng(7)
    weights = init_weights(rng, 3, output_bias=0.0)  # an offset of 14 would hide differences below its rounding
    counts = rng.poisson(3.0, (3, 8, PIXELS, PIXELS)).astype(np.float32)
    pred = forward([tf.constant(w) for w in weights], tf.constant(counts[:, :, None]), "log1p").numpy()  # one band
    np.savez(path, counts=counts, pred=pred, **{f"w{i}": w for i, w in enumerate(weights)})
    print(f"wrote {path}: 3 towers, predictions {pred.min():.4f}..{pred.max():.4f}")


def jax_model():
    """forward(params, counts (B, P, P), masks or None) for ONE tower; vmap stacks towers."""
    import jax
    import jax.numpy as jnp

    def forward(w, counts, masks=None):
        x = jnp.log1p(counts)[..., None]  # (B, P, P, 1), NHWC
        for i in (0, 2, 4):
            x = jax.lax.conv_general_dilated(x, w[i], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + w[i + 1])
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = x.mean(axis=(1, 2))
        for j, i in enumerate((6, 8, 10, 12)):
            if masks is not None and j < 2:
                x = x * masks[j]
            x = x @ w[i] + w[i + 1]
            if i < 12:
                x = jax.nn.relu(x)
        return x[:, 0]

    return forward


def check(path: str) -> float:
    """Largest |JAX port − stack.forward| over a reference file's predictions, relative to the largest |prediction|."""
    import jax

    ref = np.load(path)
    weights = [ref[f"w{i}"] for i in range(2 * len(KERNELS))]
    with jax.default_matmul_precision("highest"):  # float32 against float32, not the tensor cores' TF32
        pred = np.asarray(jax.vmap(jax_model())(weights, ref["counts"]))
    diff = float(np.abs(pred - ref["pred"]).max() / np.abs(ref["pred"]).max())
    print(f"JAX port vs hpcmass stack.forward, {pred.size} predictions (|x| ≤ {np.abs(ref['pred']).max():.3f}): "
          f"max |difference| {diff:.1e} of the largest")
    return diff


def machine() -> dict:
    """The device, and a float32 8192³ matmul rate at the default precision (TF32 on tensor cores, as
    TensorFlow's default too) and at full float32."""
    import jax
    import jax.numpy as jnp

    n = 8192
    a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
    rates = {}
    for precision in ("default", "highest"):
        f = jax.jit(lambda a, b, p=precision: jnp.matmul(a, b, precision=p))
        f(a, b).block_until_ready()
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        rates[precision] = 2 * n**3 / float(np.median(times)) / 1e12
    dev = jax.devices()[0]
    return {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
            "tflops_default": rates["default"], "tflops_highest": rates["highest"]}


def data(clusters: int, seed: int = 0):
    """Every cluster's 24 views (paper scale: 329 × 24 = 7,896 images of 128², 517 MB) and masses."""
    rng = np.random.default_rng(seed)
    projections = rng.poisson(rng.uniform(0.5, 8.0, (clusters, 1, 1, 1)), (clusters, 3, PIXELS, PIXELS))
    views = np.stack([make_views(p[:, None]) for p in projections]).reshape(-1, PIXELS, PIXELS).astype(np.float32)
    return views, rng.uniform(13.57, 15.06, clusters).astype(np.float32)


def fold_views(clusters: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """View ids of fold ``fold``'s training and validation clusters (cluster c in fold c mod 10;
    validation is the next fold, test the fold itself, the rest trains)."""
    group = np.arange(clusters) % PAPER_FOLDS
    train_c = np.flatnonzero((group != fold) & (group != (fold + 1) % PAPER_FOLDS))
    val_c = np.flatnonzero(group == (fold + 1) % PAPER_FOLDS)
    expand = lambda c: (c[:, None] * N_VIEWS + np.arange(N_VIEWS)).ravel()  # noqa: E731
    return expand(train_c), expand(val_c)


class Towers:
    """K folds' towers and Adam states on the device, trained by a jitted step (``loop``) or a
    jitted epoch (``scan``)."""

    def __init__(self, k: int, views, log_m, clusters: int, precision: str, towers: str = "vmap"):
        import jax
        import jax.numpy as jnp
        import optax

        self.k = k
        forward = jax_model()

        def stacked(fn):
            """``fn`` of one fold over the leading fold axis: vmap (grouped convolutions), or K copies
            of the tower's ops in one program (``unrolled``)."""
            if towers == "vmap":
                return jax.vmap(fn)
            tree = jax.tree_util
            return lambda *args: tree.tree_map(lambda *x: jnp.stack(x), *[
                fn(*tree.tree_map(lambda x, f=f: x[f], args)) for f in range(k)])

        opt = optax.adam(LEARNING_RATE, b1=0.9, b2=0.999, eps=1e-7)
        self.views, self.targets = jnp.asarray(views), jnp.repeat(jnp.asarray(log_m), N_VIEWS)
        self.params = [jnp.asarray(w) for w in init_weights(np.random.default_rng(k), k)]
        self.opt_state = jax.vmap(opt.init)(self.params)
        self.ids = [fold_views(clusters, f) for f in range(k)]
        shortest = min(len(v) for _, v in self.ids)  # folds of 32 or 33 clusters
        self.val_ids = jnp.asarray(np.stack([v[:shortest] for _, v in self.ids]))
        self.rng = np.random.default_rng(1)

        def fold_step(w, state, counts, targets, key):
            def loss(w):
                k1, k2 = jax.random.split(key)
                masks = [jax.random.bernoulli(kk, 1 - DROPOUT, (BATCH, n)) / (1 - DROPOUT)
                         for kk, n in ((k1, 64), (k2, 200))]
                return jnp.mean(jnp.square(forward(w, counts, masks) - targets))

            value, grad = jax.value_and_grad(loss)(w)
            updates, state = opt.update(grad, state, w)
            return optax.apply_updates(w, updates), state, value

        def step(carry, batch, views, targets):  # the data are arguments: a closed-over array would be a constant
            params, state = carry
            ids, keys = batch
            with jax.default_matmul_precision(precision):
                params, state, loss = stacked(fold_step)(params, state, views[ids], targets[ids], keys)
            return (params, state), loss

        self.step = jax.jit(step, donate_argnums=0)
        self.epoch = jax.jit(lambda carry, batches, views, targets: jax.lax.scan(
            lambda c, b: step(c, b, views, targets), carry, batches), donate_argnums=0)

        def predict(params, ids, views):
            with jax.default_matmul_precision(precision):
                return stacked(forward)(params, views[ids])

        self.predict = jax.jit(predict)

    def batches(self, epoch: int):
        """(steps, K, 32) view ids, each fold its own shuffle; (steps, K) dropout keys."""
        import jax

        orders = [self.rng.permutation(train) for train, _ in self.ids]
        steps = min(len(o) for o in orders) // BATCH
        ids = np.stack([o[: steps * BATCH].reshape(steps, BATCH) for o in orders], axis=1)
        keys = jax.random.split(jax.random.key(epoch), (steps, self.k))
        return jax.numpy.asarray(ids), keys

    def run_epoch(self, epoch: int, path: str):
        """One epoch's training and validation prediction; returns the training images."""
        ids, keys = self.batches(epoch)
        carry = (self.params, self.opt_state)
        if path == "scan":
            carry, _ = self.epoch(carry, (ids, keys), self.views, self.targets)
        else:
            for s in range(ids.shape[0]):
                carry, _ = self.step(carry, (ids[s], keys[s]), self.views, self.targets)
        self.params, self.opt_state = carry
        self.predict(self.params, self.val_ids, self.views).block_until_ready()
        return ids.size


def timed_rows(a, views, log_m) -> list[dict]:
    """Median epoch time of each (folds, towers, path, precision), after one untimed (compiling) epoch."""
    k = a.stack
    rows = []
    for folds, towers, path, precision in [(1, "vmap", "loop", "default"), (1, "vmap", "scan", "default"),
                                           (k, "vmap", "loop", "default"), (k, "vmap", "scan", "default"),
                                           (k, "unrolled", "loop", "default"), (k, "unrolled", "scan", "default"),
                                           (k, "vmap", "scan", "highest")]:
        model = Towers(folds, views, log_m, a.clusters, precision, towers)
        t0 = time.perf_counter()
        model.run_epoch(0, path)
        compile_s = time.perf_counter() - t0
        times, images = [], 0
        for e in range(1, a.epochs + 1):
            t0 = time.perf_counter()
            images = model.run_epoch(e, path)
            times.append(time.perf_counter() - t0)
        epoch_s = float(np.median(times))
        rows.append({"folds": folds, "towers": towers, "path": path, "precision": precision, "epoch_s": epoch_s,
                     "epoch_s_all": times, "images": images, "first_epoch_s": compile_s})
        print(f"  K={folds:2d} {towers:8s} {path:4s} {precision:7s}: {epoch_s:.3f} s/epoch "
              f"({images / epoch_s:,.0f} images/s; first epoch {compile_s:.1f} s)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", type=int, default=PAPER_FOLDS, help="folds stacked in the second set of rows")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per row (median), after one untimed")
    ap.add_argument("--clusters", type=int, default=329)
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--write-reference", metavar="NPZ", help="save stack.forward's predictions (TensorFlow) and exit")
    ap.add_argument("--check", metavar="NPZ", help="compare the JAX port with a reference file first")
    a = ap.parse_args()
    if a.write_reference:
        return write_reference(a.write_reference)
    diff = check(a.check) if a.check else None
    if diff is not None and not diff < 1e-5:  # float32 rounding: 5e-7 on CPU; a weight off by 0.1% gives 1e-3
        sys.exit(f"the JAX port differs from stack.forward by {diff:.1e} (> 1e-5): not timing a different model")
    params = sum(int(np.prod(s)) + s[-1] for s in KERNELS)
    assert params == PAPER_PARAMETERS, f"{params} parameters per tower, the paper's CNN has {PAPER_PARAMETERS}"

    m = machine()
    flop = train_flop_per_image()
    print(f"device: {m['device']} ({m['platform']}, jax {m['jax']}); float32 8192³ matmul "
          f"{m['tflops_default']:.0f} TFLOP/s default precision, {m['tflops_highest']:.0f} TFLOP/s full float32")
    print(f"CNN: {params:,} parameters per tower, {flop / 1e9:.3f} GFLOP per training image; "
          f"limit {m['tflops_default'] * 1e12 / flop:,.0f} images/s (default), "
          f"{m['tflops_highest'] * 1e12 / flop:,.0f} (float32)")
    views, log_m = data(a.clusters)
    train_n, val_n = (len(x) for x in fold_views(a.clusters, 0))
    print(f"{a.clusters} clusters: {train_n} training and {val_n} validation views per fold, batch {BATCH}")
    rows = timed_rows(a, views, log_m)

    print(f"\n{'folds':>5} {'towers':>8} {'path':>4} {'precision':>9} {'s/epoch':>8} {'images/s':>9} {'of limit':>8} "
          f"{'per fold':>8} {'10 folds × 150 epochs':>22}")
    single = {r["path"]: r["epoch_s"] for r in rows if r["folds"] == 1}
    for r in rows:
        rate = r["images"] / r["epoch_s"]
        limit = m[f"tflops_{r['precision']}"] * 1e12 / flop
        minutes = PAPER_EPOCHS * r["epoch_s"] * (PAPER_FOLDS / r["folds"]) / 60
        r.update(images_per_s=rate, fraction_of_limit=rate / limit, paper_minutes=minutes)
        print(f"{r['folds']:>5} {r['towers']:>8} {r['path']:>4} {r['precision']:>9} {r['epoch_s']:>8.3f} {rate:>9,.0f} "
              f"{rate / limit:>8.1%} {r['epoch_s'] / r['folds']:>8.3f} {minutes:>18.1f} min")
    for r in rows:
        if r["folds"] > 1 and r["precision"] == "default":
            print(f"stacked {r['folds']} folds ({r['towers']}, {r['path']}): {single[r['path']] * r['folds'] / r['epoch_s']:.1f}× "
                  f"the throughput of one fold alone")
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": m, "clusters": a.clusters, "check_max_diff": diff,
                                           "flop_per_image": flop, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
