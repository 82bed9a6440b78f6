"""Does Horovod really average? Run with ``mpirun -n 2``; writes a JSON report for the test.

Both ranks train the paper's CNN with hpcmass's own pieces (Group, compile_model, the tf.data
pipeline and its per-rank shards of a shuffled epoch) for a few steps, each on different views.
Rank 0 then repeats the steps in one plain process on the union of both ranks' batches, and,
as a control, on its own batches alone. Dropout is switched off in all three: its masks depend
on the batch layout, and what is tested is the gradient averaging.

Usage: hvd_average.py OUT.json
"""

import json
import sys

import numpy as np
import tf_keras

from hpcmass.train.pipeline import ViewSource, epoch_order, view_ids
from hpcmass.mpi import install_excepthook, world
from hpcmass.train.distributed import Group
from hpcmass.train.fold import compile_model
from hpcmass.train.model import build_model

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from toy_clusters import toy_images  # noqa: E402

STEPS, BATCH, LR, PIXELS = 6, 4, 1e-3, 24


def fresh_model():
    tf_keras.utils.set_random_seed(11)
    model = build_model(PIXELS, "log1p", seed=5)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Dropout):
            layer.rate = 0.0
    return model


def train(model, group, source, ids, batch):
    optimizer = compile_model(model, group, LR)
    group.broadcast(model.variables + optimizer.variables)
    model.fit(source.dataset(ids, batch), epochs=1, verbose=0)
    return model.get_weights()


def max_diff(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True)))


def main():
    comm = world()
    install_excepthook(comm)
    group = Group.horovod(comm)
    images, log_m = toy_images(12, PIXELS, seed=3)
    source = ViewSource(images, log_m)
    ids = view_ids(np.arange(12), source.n_views)
    shards = [epoch_order(ids, 1, 0, 1, r, group.size)[: STEPS * BATCH] for r in range(group.size)]

    model = fresh_model()
    w0 = model.get_weights()
    weights = train(model, group, source, shards[group.rank], BATCH)
    every = group.allgather(weights)
    group.shutdown()
    if group.rank != 0:
        return
    union = np.concatenate([np.concatenate([s[i * BATCH:(i + 1) * BATCH] for s in shards]) for i in range(STEPS)])
    reference = train(fresh_model(), Group(), source, union, BATCH * group.size)
    alone = train(fresh_model(), Group(), source, shards[0], BATCH)
    report = {
        "size": group.size,
        "shards_overlap": len(set(shards[0]) & set(shards[1])),
        "moved": max_diff(w0, weights),
        "ranks_differ": max(max_diff(every[0], w) for w in every[1:]),
        "vs_union": max_diff(weights, reference),
        "vs_rank0_alone": max_diff(weights, alone),
    }
    with open(sys.argv[1], "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    main()
