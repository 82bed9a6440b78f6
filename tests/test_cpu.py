"""How ranks use the CPU: TensorFlow thread pools sized to the cores a rank owns, oneDNN kernels on,
and waiting ranks that sleep instead of spinning a core (issue 13). Real mpirun, real TensorFlow."""

from __future__ import annotations

import json
import os
import sys

import pytest

from hpcmass.cpu import threads_for
from conftest import PROGRAMS, base_env, mpirun, run

CORES = len(os.sched_getaffinity(0))


def _ranks(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    # mpirun forwards each rank's stdout in chunks: two ranks' lines can arrive joined, so decode objects
    # one after another instead of line by line.
    rows, text, decoder = [], proc.stdout, json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        row, end = decoder.raw_decode(text, start)
        rows.append(row)
        start = text.find("{", end)
    return sorted(rows, key=lambda r: r["rank"])


def test_threads_divide_a_shared_mask_among_working_ranks():
    node = frozenset(range(8))
    assert threads_for(node, [node]) == 8
    assert threads_for(node, [node, node]) == 4
    assert threads_for(node, [node] * 3) == 2  # 8 // 3: never more threads than cores
    assert threads_for(node, [node] * 16) == 1  # more ranks than cores: at least one thread


def test_threads_of_bound_ranks_are_their_own_cores():
    masks = [frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5, 6, 7})]
    assert [threads_for(m, masks) for m in masks] == [2, 2, 4]


def test_idle_ranks_take_no_share():
    node = frozenset(range(4))
    # Rank 0 trains, rank 1 has no fold: only working masks are passed, so rank 0 gets every core.
    assert threads_for(node, [node]) == 4


@pytest.mark.mpi
@pytest.mark.skipif(CORES < 2, reason="needs 2 cores")
def test_bound_ranks_get_one_thread_each():
    # OpenMPI binds each of 2 ranks to its own core by default: one thread each, not the node's count.
    ranks = _ranks(mpirun(2, PROGRAMS / "tf_threads.py", "0,1", timeout=120))
    assert [len(r["mask"]) for r in ranks] == [1, 1]
    assert [(r["threads"], r["intra"], r["inter"]) for r in ranks] == [(1, 1, 1), (1, 1, 1)]


@pytest.mark.mpi
@pytest.mark.skipif(CORES < 2, reason="needs 2 cores")
def test_unbound_ranks_share_the_node_and_a_lone_worker_takes_it_all():
    unbound = ["mpirun", "--bind-to", "none", "-n", "2", "-x", "PYTHONPATH", "-x", "TF_USE_LEGACY_KERAS",
               sys.executable, PROGRAMS / "tf_threads.py"]
    both = _ranks(run([*unbound, "0,1"], timeout=120))
    assert [len(r["mask"]) for r in both] == [CORES, CORES]
    assert [r["threads"] for r in both] == [CORES // 2, CORES // 2]
    alone = _ranks(run([*unbound, "0"], timeout=120))
    assert alone[0]["threads"] == alone[0]["intra"] == CORES
    assert "intra" not in alone[1], "an idle rank must not start TensorFlow"


@pytest.mark.mpi
def test_site_threads_overrides():
    ranks = _ranks(mpirun(1, PROGRAMS / "tf_threads.py", "0", "3", timeout=120))
    assert (ranks[0]["threads"], ranks[0]["intra"]) == (3, 3)


def test_onednn_kernels_are_on_after_importing_hpcmass():
    # TensorFlow leaves them off on CPUs without AVX-512 VNNI/AMX; hpcmass turns them on before TF loads.
    code = ("import hpcmass, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "print(port.IsMklEnabled())")
    env = {k: v for k, v in base_env().items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = run([sys.executable, "-c", code], env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
    off = run([sys.executable, "-c", code], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"}, timeout=120)
    assert off.stdout.strip().splitlines()[-1] == "False", "an explicit TF_ENABLE_ONEDNN_OPTS=0 must win"


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["wait_all", "on_root"])
def test_waiting_ranks_sleep(how):
    # MPI_Barrier/bcast spin a core for the whole wait (4.0 CPU-s per 4 s measured); these must not.
    ranks = _ranks(mpirun(2, PROGRAMS / "waiting_rank.py", how, "2", timeout=120))
    waiter = ranks[1]
    assert waiter["wall_s"] >= 1.9, "the waiting rank must wait for rank 0"
    assert waiter["cpu_s"] < 0.3, f"the waiting rank used {waiter['cpu_s']:.2f} CPU-s in a 2 s wait"
