"""An MPI program for the foundation tests: farm uneven units over ranks into the store.

Each unit's value depends only on (seed, unit); the rank that ran it is recorded separately.
Usage: farm_store.py WORKDIR N_UNITS [--sleep-unit K:SECONDS] [--fail-unit K] [--exit-after M]

Rank 0 prints READY (flushed) once its first unit is done: by then every rank has installed the
stop handler (before the collective store open) and taken work, so a test may send SIGUSR1.
"""

import argparse
import sys
import time

from hpcmass.mpi import (EXIT_STOPPED, dynamic_tasks, get_logger, install_excepthook, install_stop_handler,
                         progress, stop_requested, world)
from hpcmass.params import load_params
from hpcmass.seeding import rng
from hpcmass.store import Store

#: Printed by rank 0 after its first unit: the stop handlers are installed and work has started.
READY = "farm: stop handler installed, first unit done"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("n_units", type=int)
    ap.add_argument("--sleep-unit", action="append", default=[])
    ap.add_argument("--fail-unit", type=int, action="append", default=[])
    ap.add_argument("--default-sleep", type=float, default=0.01)
    ap.add_argument("--exit-after", type=int, default=None, help="hard-exit this rank after M units")
    a = ap.parse_args()
    comm = world()
    install_excepthook(comm)
    install_stop_handler()
    log = get_logger(comm)
    params = load_params(None, [f"catalog.n_clusters={a.n_units}", "dataset.n_folds=3", "run.seed=7"])
    sleeps = {int(k): float(v) for k, v in (s.split(":") for s in a.sleep_unit)}
    with Store.open_stage(a.workdir, params, "catalog", comm, n_units=a.n_units, unit="cluster", log=log) as st:
        values = st.require_dataset("values", (a.n_units, 16), "f8")
        ranks = st.require_dataset("rank", (a.n_units,), "i4", fillvalue=-1)
        todo = st.pending()
        costs = [sleeps.get(i, 0.01) + i * 1e-4 for i in todo]
        done_here = 0
        with progress(comm, len(todo), "units") as bar:
            for unit in dynamic_tasks(comm, todo, costs):
                time.sleep(sleeps.get(unit, a.default_sleep))
                if unit in a.fail_unit:
                    st.mark_failed(unit, f"unit {unit} asked to fail")
                    continue
                values[unit] = rng(params.run.seed, "farm", unit).normal(size=16)
                ranks[unit] = comm.Get_rank()
                st.mark_done(unit)
                done_here += 1
                bar.update()
                if done_here == 1 and comm.Get_rank() == 0:
                    print(READY, flush=True)
                if a.exit_after is not None and done_here >= a.exit_after:
                    import os
                    os._exit(9)
        summary = st.summary()
    if comm.Get_rank() == 0:
        print(f"done {summary['done']}/{summary['total']} failed {len(summary['failed'])}")
    return EXIT_STOPPED if stop_requested() else 0


if __name__ == "__main__":
    sys.exit(main())
