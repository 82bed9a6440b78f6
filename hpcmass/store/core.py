"""Opening the store and writing a stage: :class:`Store` and :class:`StageWriter`.

Writing: every rank opens the file together (``mpio`` driver when h5py has MPI) and takes the
same collective steps (open, create groups/datasets, write attributes, close); inside a stage
each rank writes its own units independently. Where h5py lacks MPI, each rank writes a shard
file instead (:mod:`.shards`). Datasets are contiguous and allocated at creation, so those
independent writes touch raw data only, never HDF5 metadata: a job killed mid-stage leaves a
readable file, and a unit's done flag is written after its data by the same process, so SIGKILL
can lose a unit in progress but never mark an unfinished one done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import StageError, StoreBusyError, StoreError
from ..mpi import wait_all
from ..params import STAGES, Params
from .layout import (
    ATTRS,
    DONE,
    ERROR_LEN,
    FAILED,
    LAYOUT,
    LAYOUT_CHANGES,
    LAYOUT_VERSION,
    PENDING,
    PROVENANCE_ATTRS,
    stage_dir,
    store_path,
)
from .lock import collective_lock
from .provenance import attr_value, git_commit, package_versions, params_diff, utc_now
from .shards import join_shards, parallel_hdf5, sharded

_SHARDS_ANNOUNCED = False


def open_h5(path: Path, mode: str, comm) -> h5py.File:
    kwargs = {}
    if comm is not None and parallel_hdf5() and mode != "r" and not sharded(comm):
        kwargs = {"driver": "mpio", "comm": comm}
    if mode == "r":
        # Readers (status, reports) may look while a stage writes: writers only add raw data to
        # flushed, pre-allocated datasets, so skipping HDF5's file lock is safe for them.
        kwargs["locking"] = False
    try:
        return h5py.File(path, mode, **kwargs)
    except FileNotFoundError:
        raise StoreError(f"{path}: no store here; run `hpcmass catalog` with this --workdir first") from None
    except OSError as e:
        if e.errno == errno.EAGAIN:  # HDF5's file lock: another process has the file open for writing
            raise StoreBusyError(f"{path}: in use by another process (HDF5 file lock); retry when it is done") from None
        raise StoreError(
            f"{path}: cannot open the store ({str(e).splitlines()[0]}); it may be truncated or not an HDF5 file. "
            f"Move it aside and re-run from the first stage, or use another --workdir"
        ) from None


def layout_error(f: h5py.File, path: Path) -> StoreError | None:
    """Why this hpcmass cannot use the open store ``f`` (another layout version), or None."""
    version = f.attrs.get("layout_version")
    if version is None or int(version) == LAYOUT_VERSION:
        return None  # a new file (stamped when its first stage opens) or this layout
    change = LAYOUT_CHANGES.get(LAYOUT_VERSION, "") if int(version) < LAYOUT_VERSION else "a newer hpcmass wrote it"
    return StoreError(f"{path}: store layout version {int(version)}, this hpcmass ({__version__}) reads version "
                      f"{LAYOUT_VERSION} ({change}); re-run the stages in a new --workdir, or read it with the hpcmass "
                      f"that wrote it ({attr_value(f.attrs.get('hpcmass_version', 'unknown'))})")


class StageWriter:
    """One stage's group, opened for writing by every rank of ``comm``."""

    def __init__(self, store: "Store", stage: str, n_units: int, unit: str, base_states: np.ndarray | None = None):
        self.store, self.stage, self.unit = store, stage, unit
        self.group = store.file[stage]
        self.n_units = n_units
        self._done = self.group["done"]
        self._error = self.group["error"]
        # Shard mode: this rank's file holds only its own units; the store's states come from rank 0,
        # and stage attributes wait for rank 0 to write them into the store at the join.
        self._base_states = base_states
        self.deferred_attrs: dict = {}
        # Whole-stage products (not per unit), computed by rank 0 once every unit is in the store.
        self._on_complete: list = []
        self._whole: dict[str, tuple] = {}

    def require_dataset(self, name: str, shape: tuple, dtype, fillvalue=None) -> h5py.Dataset:
        """Create (collectively, all ranks alike) or reopen a contiguous, pre-allocated dataset."""
        if name in self.group:
            ds = self.group[name]
            if ds.shape != tuple(shape) or ds.dtype != np.dtype(dtype):
                raise StoreError(f"{self.store.path}: /{self.stage}/{name} has shape {ds.shape} {ds.dtype}, "
                                 f"expected {tuple(shape)} {np.dtype(dtype)}; use --restart-from {self.stage}")
            return ds
        if self._base_states is not None:
            # A shard stores only this rank's units: one chunk per unit keeps it sparse.
            return self.group.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fillvalue, track_times=False,
                                             chunks=(1, *shape[1:]) if shape else None)
        ds = self.group.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fillvalue, track_times=False)
        # Collective flush: the new metadata reach the file now, so a job killed later leaves it readable.
        self.store.file.flush()
        return ds

    def require(self, name: str, fillvalue=None, **dims: int) -> h5py.Dataset:
        """Create or reopen a dataset declared in :data:`LAYOUT`, giving its dimension sizes."""
        try:
            shape_spec, dtype, _ = LAYOUT[self.stage][name]
        except KeyError:
            raise KeyError(f"/{self.stage}/{name} is not declared in hpcmass.store.layout.LAYOUT") from None
        dims.setdefault("n", self.n_units)
        shape = tuple(d if isinstance(d, int) else dims[d] for d in shape_spec)
        if shape_spec[:1] != ("n",):
            self._whole[name] = (shape, dtype)
        return self.require_dataset(name, shape, dtype, fillvalue=fillvalue)

    def on_complete(self, compute) -> None:
        """Register a whole-stage product: when every rank has closed the stage and its units are all in
        the store, rank 0 calls ``compute(read)`` — ``read(name)`` gives a dataset of this stage with
        every unit, ``read("done")`` the unit states — and writes each array of the dict it returns to
        the dataset of that name (declared in LAYOUT without a unit axis, created with :meth:`require`).
        """
        self._on_complete.append(compute)

    def _complete(self, group: h5py.Group) -> None:
        """Rank 0, with ``group`` the store's own (every unit present): run the on_complete products."""
        for compute in self._on_complete:
            for name, value in compute(lambda name: group[name][...]).items():
                if name not in group:
                    shape, dtype = self._whole[name]
                    group.create_dataset(name, shape=shape, dtype=dtype, track_times=False)
                group[name][...] = value

    def states(self) -> np.ndarray:
        local = self._done[...]
        if self._base_states is None:
            return local
        return np.where(local != PENDING, local, self._base_states)

    def pending(self) -> list[int]:
        """Units not yet done (failed ones are retried)."""
        return [int(i) for i in np.flatnonzero(self.states() != DONE)]

    def mark_done(self, unit: int) -> None:
        """Call after the unit's data are written; the flag is the last byte written for it."""
        self._error[unit] = b""
        self._done[unit] = DONE
        if self._base_states is not None:
            self.store.file.flush()  # a shard is a serial file: make the unit durable now

    def mark_failed(self, unit: int, reason: str) -> None:
        self._error[unit] = reason.encode("utf-8", "replace")[: ERROR_LEN - 1]
        self._done[unit] = FAILED
        if self._base_states is not None:
            self.store.file.flush()

    def set_attrs(self, **attrs) -> None:
        """Collective: every rank must call with the same values. Names must be declared in
        :data:`~hpcmass.store.layout.ATTRS` (or be provenance)."""
        undeclared = sorted(k for k in attrs if k not in ATTRS.get(self.stage, {}) and k not in PROVENANCE_ATTRS)
        if undeclared:
            raise KeyError(f"/{self.stage} attribute(s) {', '.join(undeclared)} not declared in "
                           f"hpcmass.store.layout.ATTRS")
        if self._base_states is not None:
            self.deferred_attrs.update(attrs)
            return
        for k, v in attrs.items():
            self.group.attrs[k] = v
        self.store.file.flush()

    def provenance(self) -> dict:
        """The stage group's attributes (provenance and the stage's own) as plain Python values."""
        return {k: attr_value(v) for k, v in self.group.attrs.items()}

    def summary(self) -> dict:
        """Collective: units done, failed (with reasons) and total over all ranks."""
        states = self.states()
        errors = self._error[...]
        if self._base_states is not None:
            for other_states, other_errors in self.store.comm.allgather((self._done[...], errors)):
                states = np.where(other_states != PENDING, other_states, states)
                errors = np.where(other_states == FAILED, other_errors, errors)
        return {
            "done": int((states == DONE).sum()),
            "failed": {int(i): errors[i].decode() for i in np.flatnonzero(states == FAILED)},
            "total": self.n_units,
        }


class Store:
    """An open ``store.h5``. Use :meth:`open_stage` to write a stage, :meth:`read` to inspect."""

    def __init__(self, path: Path, file: h5py.File, comm=None):
        self.path, self.file, self.comm = path, file, comm

    # Reading ----------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def read(cls, workdir: str | Path) -> Iterator["Store"]:
        """Open read-only (no lock, no MPI driver): status, reports, tests."""
        path = store_path(workdir)
        with open_h5(path, "r", None) as f:
            error = layout_error(f, path)
            if error is not None:
                raise error
            yield cls(path, f)

    def stage_state(self, stage: str) -> dict | None:
        if stage not in self.file:
            return None
        g = self.file[stage]
        states = g["done"][...]
        return {
            "done": int((states == DONE).sum()),
            "failed": int((states == FAILED).sum()),
            "total": int(states.size),
            "unit": str(g.attrs.get("unit", "unit")),
            "params_hash": str(g.attrs.get("params_hash", "")),
            "last_run_utc": str(g.attrs.get("last_run_utc", "")),
            "last_run_ranks": int(g.attrs.get("last_run_ranks", 0)),
        }

    def is_complete(self, stage: str) -> bool:
        s = self.stage_state(stage)
        return s is not None and s["done"] == s["total"]

    def require_complete(self, stage: str, params_file: str | None = None) -> None:
        """Raise StageError naming the command to run when ``stage`` is missing or unfinished."""
        s = self.stage_state(stage)
        if s is not None and s["done"] == s["total"]:
            return
        cmd = f"hpcmass {stage}" + (f" --params {params_file}" if params_file else "")
        have = "has not been run" if s is None else f"has {s['done']}/{s['total']} {s['unit']}s done"
        raise StageError(f"{self.path}: the {stage} stage {have}; run `{cmd}` with this --workdir first")

    # Writing ----------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def open_stage(cls, workdir: str | Path, params: Params, stage: str, comm, *, n_units: int, unit: str,
                   restart_from: str | None = None, log=None) -> Iterator[StageWriter]:
        """Open the store on every rank of ``comm`` to write ``stage``; collective.

        Takes the writer lock (rank 0), refuses a store whose earlier stages were made with other
        params (unless ``restart_from`` discards them), creates or reopens the stage group and
        records provenance. On exit every rank closes the file together.
        """
        workdir = Path(workdir)
        path = store_path(workdir)
        rank = comm.Get_rank()
        with collective_lock(path, stage, comm, log):
            prov = comm.bcast(cls._provenance(params, stage, comm) if rank == 0 else None, root=0)
            if rank == 0:
                (workdir / "params.resolved.yaml").write_text(prov["params_yaml"])
            # Decide (rank 0, from a serial read) what the collective open must do, so every rank agrees.
            plan = comm.bcast(cls._plan(path, params, stage, restart_from) if rank == 0 else None, root=0)
            if isinstance(plan, StoreError):
                raise plan
            if sharded(comm):
                with cls._open_sharded(workdir, stage, comm, n_units, unit, prov, plan, log) as writer:
                    yield writer
                return
            with open_h5(path, "a", comm) as f:
                store = cls(path, f, comm)
                store._prepare(plan, prov)
                writer = store._begin(stage, n_units, unit, prov)
                try:
                    yield writer
                finally:
                    f.flush()  # collective: every rank's units are written
                    if rank == 0:
                        writer._complete(f[stage])
                    writer.set_attrs(last_run_utc=comm.bcast(utc_now() if rank == 0 else None, root=0))

    @classmethod
    @contextlib.contextmanager
    def _open_sharded(cls, workdir: Path, stage: str, comm, n_units: int, unit: str, prov: dict, plan: dict,
                      log) -> Iterator[StageWriter]:
        """Shard mode: rank 0 keeps the store; every rank writes its units to its own shard file."""
        global _SHARDS_ANNOUNCED
        path = store_path(workdir)
        rank = comm.Get_rank()
        shard_dir = stage_dir(workdir, stage) / "shards"
        base = None
        if rank == 0:
            if log and not _SHARDS_ANNOUNCED:
                log.warning("h5py has no MPI support (or HPCMASS_STORE_SHARDS=1): each rank writes a shard file under "
                            "%s, joined into %s as virtual datasets at the end of the stage", shard_dir, path)
                _SHARDS_ANNOUNCED = True
            for dropped in plan["drop"]:
                shutil.rmtree(stage_dir(workdir, dropped) / "shards", ignore_errors=True)
            with open_h5(path, "a", None) as f:
                store = cls(path, f)
                store._prepare(plan, prov)
                store._begin(stage, n_units, unit, prov)
                join_shards(f, stage, shard_dir, log)  # units a killed run finished
                base = f[stage]["done"][...]
            shard_dir.mkdir(parents=True, exist_ok=True)
        base = comm.bcast(base, root=0)
        shard = shard_dir / f"{stage}-{prov['run_id']}-r{rank}.h5"
        try:
            with h5py.File(shard, "w") as sf:
                g = sf.create_group(stage)
                g.create_dataset("done", shape=(n_units,), dtype="i1", fillvalue=PENDING)
                g.create_dataset("error", shape=(n_units,), dtype=f"S{ERROR_LEN}")
                sf.flush()
                writer = StageWriter(cls(shard, sf, comm), stage, n_units, unit, base_states=base)
                yield writer
        finally:
            wait_all(comm)
            if rank == 0:
                with open_h5(path, "a", None) as f:
                    join_shards(f, stage, shard_dir, log)
                    writer._complete(f[stage])
                    for k, v in {**writer.deferred_attrs, "last_run_utc": utc_now()}.items():
                        f[stage].attrs[k] = v

    def _prepare(self, plan: dict, prov: dict) -> None:
        """Drop the stages the plan discards; stamp a new file."""
        f = self.file
        for s in plan["drop"]:
            del f[s]
        if "layout_version" not in f.attrs:
            f.attrs["layout_version"] = LAYOUT_VERSION
            f.attrs["created_utc"] = prov["utc"]
            f.attrs["hpcmass_version"] = __version__

    @staticmethod
    def _provenance(params: Params, stage: str, comm) -> dict:
        return {
            "params_yaml": params.to_yaml(),
            "params_hash": params.stage_hash(stage),
            "params_identity": json.dumps(params.stage_identity(stage), sort_keys=True),
            "seed": params.run.seed,
            "versions": json.dumps(package_versions(), sort_keys=True),
            "git_commit": git_commit(),
            "utc": utc_now(),
            "ranks": comm.Get_size(),
            "run_id": uuid.uuid4().hex[:10],
        }

    @staticmethod
    def _plan(path: Path, params: Params, stage: str, restart_from: str | None):
        """Which stage groups to drop; or the StoreError explaining why the store cannot be used."""
        if restart_from is not None and restart_from not in STAGES:
            return StoreError(f"--restart-from {restart_from!r}: expected one of {', '.join(STAGES)}")
        if restart_from is not None and STAGES.index(restart_from) > STAGES.index(stage):
            return StoreError(f"--restart-from {restart_from} comes after the {stage} stage; nothing to restart")
        if not path.exists():
            return {"drop": []}
        try:
            with h5py.File(path, "r") as f:
                error = layout_error(f, path)
                present = [s for s in STAGES if s in f]
                stored = {s: (f[s].attrs.get("params_hash", ""), f[s].attrs.get("params_identity", "{}"))
                          for s in present}
        except OSError as e:
            return StoreError(f"{path}: cannot open the store ({str(e).splitlines()[0]}); it may be truncated or "
                              f"not an HDF5 file. Move it aside and re-run from the first stage, or use another --workdir")
        if error is not None:
            return error
        drop = []
        if restart_from is not None:
            drop = [s for s in present if STAGES.index(s) >= STAGES.index(restart_from)]
        for s in present:
            if s in drop or STAGES.index(s) > STAGES.index(stage):
                continue
            if stored[s][0] != params.stage_hash(s):
                changed = params_diff(json.loads(stored[s][1]), params.stage_identity(s))
                return StoreError(
                    f"{path}: the {s} stage was made with other params ({changed}); re-run with "
                    f"--restart-from {s} to discard it and every later stage, or use another --workdir"
                )
        # A stage made afresh invalidates whatever later stages the store still holds.
        if stage not in present or stage in drop:
            drop += [s for s in present if STAGES.index(s) > STAGES.index(stage) and s not in drop]
        return {"drop": drop}

    def _begin(self, stage: str, n_units: int, unit: str, prov: dict) -> StageWriter:
        f = self.file
        if stage not in f:
            g = f.create_group(stage, track_order=True)
            g.create_dataset("done", shape=(n_units,), dtype="i1", fillvalue=PENDING, track_times=False)
            g.create_dataset("error", shape=(n_units,), dtype=f"S{ERROR_LEN}", track_times=False)
            for k in ("params_yaml", "params_hash", "params_identity", "seed", "versions", "git_commit"):
                g.attrs[k] = prov[k]
            g.attrs["created_utc"] = prov["utc"]
            g.attrs["unit"] = unit
            g.attrs["n_runs"] = 0
        g = f[stage]
        if g["done"].shape != (n_units,):
            raise StoreError(f"{self.path}: /{stage} holds {g['done'].shape[0]} {unit}s, this run has {n_units}; "
                             f"use --restart-from {stage}")
        g.attrs["n_runs"] = int(g.attrs["n_runs"]) + 1
        g.attrs["last_run_ranks"] = prov["ranks"]
        g.attrs["last_run_versions"] = prov["versions"]
        g.attrs["last_run_git_commit"] = prov["git_commit"]
        f.flush()
        return StageWriter(self, stage, n_units, unit)



def status(workdir: str | Path) -> dict:
    """Per-stage progress from the store alone (no params needed)."""
    path = store_path(workdir)
    if not path.exists():
        return {"store": str(path), "exists": False, "stages": {s: None for s in STAGES}}
    with Store.read(workdir) as store:
        return {"store": str(path), "exists": True, "layout_version": int(store.file.attrs.get("layout_version", 0)),
                "stages": {s: store.stage_state(s) for s in STAGES}}
