"""The checkpointed HDF5 store ``<workdir>/store.h5``: its layout lives here and nowhere else.

Layout (layout version 1)::

    /                       attrs: layout_version, created_utc, hpcmass_version
    /<stage>/               one group per stage in params.STAGES order; attrs = provenance:
                            params_yaml, params_hash, seed, versions (JSON), git_commit,
                            created_utc, last_run_utc, last_run_ranks, n_runs, unit
        done    int8[n]     per-unit state: 0 pending, 1 done, -1 failed; written last
        error   S256[n]     why a unit failed (empty otherwise)
        <data>              the stage's datasets, first axis = unit where per-unit

Files beside the store (large or foreign-format products) sit in ``<workdir>/<stage>/``.

Writing: every rank opens the file together (``mpio`` driver when h5py has MPI) and takes the
same collective steps (open, create groups/datasets, write attributes, close); inside a stage
each rank writes its own units independently. Where h5py lacks MPI (or HPCMASS_STORE_SHARDS=1),
each rank writes a shard file ``<workdir>/<stage>/shards/<stage>-<run>-r<rank>.h5`` with the same
group layout, and rank 0 joins the shards' finished units into the store as HDF5 virtual
datasets at the end of the stage (and at the start of the next run, so a killed run's units count). Datasets are contiguous and allocated at
creation, so those independent writes touch raw data only, never HDF5 metadata: a job killed
mid-stage leaves a readable file, and a unit's done flag is written after its data by the same
process, so SIGKILL can lose a unit in progress but never mark an unfinished one done.

One writer at a time: rank 0 holds ``store.h5.lock`` (host, pid, SLURM job) for the run; a
lock whose process is gone (same host) or whose SLURM job was requeued is stale and replaced.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import StageError, StoreBusyError, StoreError
from .params import STAGES, Params

LAYOUT_VERSION = 1
STORE_NAME = "store.h5"

#: The stage datasets: name -> (shape in named dimensions, dtype, meaning). Dimension names are
#: given as keywords to :meth:`StageWriter.require`; ``n`` is always the stage's unit count.
#: Stages create their datasets only through this table, so it is the whole layout.
LAYOUT: dict[str, dict[str, tuple[tuple[str | int, ...], str, str]]] = {
    "catalog": {  # unit: cluster
        "cluster_id": (("n",), "i8", "catalogue index (TNG FoF group number, or synthetic index)"),
        "log_m500c": (("n",), "f8", "log10 M500c [Msun], the training target"),
        "r500c_kpc": (("n",), "f8", "R500c [physical kpc]"),
        "center_ckpch": (("n", 3), "f8", "cluster centre in its cutout's coordinates [ckpc/h]"),
        "cutout": (("n",), "S256", "gas cutout file, relative to the workdir (TNG/Arepo HDF5 layout)"),
        "n_gas_cells": (("n",), "i8", "gas cells in the cutout (the observe stage's cost estimate)"),
        # Measured on the cutout's cells (3D apertures about the centre; hot = kT > 0.1 keV, SFR = 0):
        "n_hot_cells": (("n",), "i8", "hot, non-star-forming gas cells (those that emit in the observe stage)"),
        "mgas500_msun": (("n",), "f8", "gas mass within R500c [Msun]"),
        "lx_ce_erg_s": (("n",), "f8", "0.5-2 keV free-free L_X of hot gas in 0.15-1 R500c [erg/s], core-excised"),
        "lx_ci_erg_s": (("n",), "f8", "0.5-2 keV free-free L_X of hot gas within R500c [erg/s], core-included"),
        "tx_kev": (("n",), "f8", "spectroscopic-like (rho^2 T^-3/4) temperature of hot gas in 0.15-1 R500c [keV]"),
        "k0_kev_cm2": (("n",), "f8", "mass-weighted entropy kT n_e^-2/3 of hot gas within 0.05 R500c [keV cm^2]"),
        "cool_core": (("n",), "i1", "1 if k0_kev_cm2 < 60 (below the bimodal core-entropy gap)"),
    },
    "observe": {  # unit: cluster
        "images": (("n", "axes", "pixels", "pixels"), "i4", "counts per pixel, emin-emax keV, axes x,y,z"),
        # attrs: data_mode, pixel_arcsec, pixel_kpc, axes, exposure_ks, redshift, instrument, ... (observe/cli.py)
        "n_photons": (("n",), "i8", "photons pyXSIM generated for the cluster (before projection and instrument)"),
        "seconds": (("n", "parts"), "f4", "wall time of load, photons, projection, instrument (all axes) [s]"),
    },
    "dataset": {  # unit: cluster
        "fold": (("n",), "i2", "cross-validation fold of each cluster (mass-sorted, cyclic)"),
    },
    "train": {  # unit: fold
        "pred_log_m500c": (("clusters", "views"), "f4", "test-fold prediction for every view of every cluster"),
        "epoch_chosen": (("n",), "i4", "epoch whose model was kept"),
        "criteria_met": (("n",), "i1", "1 if the validation stopping criteria were met"),
        # Per-epoch records of each fold (NaN after its last epoch); "val_*" are the stopping criteria.
        "history_loss": (("n", "epochs"), "f4", "training loss (MSE of log10 M500c, mean over ranks)"),
        "history_val_max_abs_delta": (("n", "epochs"), "f4", "validation max |delta|"),
        "history_val_median_delta": (("n", "epochs"), "f4", "validation median delta"),
        "history_val_slope": (("n", "epochs"), "f4", "validation slope of predicted vs true log10 M500c"),
        "history_val_met": (("n", "epochs"), "f4", "1 where all stopping criteria were met"),
        "history_seconds": (("n", "epochs"), "f4", "wall time of the epoch [s]"),
        "ranks": (("n",), "i4", "processes that trained the fold (Horovod group size; 1 without Horovod)"),
        "learning_rate": (("n",), "f4", "Adam learning rate used (after Horovod scaling)"),
    },
    "interpret": {  # unit: cluster; "steps" = iterations + 1 (the input first), radii in R500c
        "pred_dream": (("n", "views", "steps"), "f4", "log10 M500c predicted for each view, then after each iteration"),
        "profile": (("n", "views", "iterations", "bins"), "f4",
                    "radial Delta N / N (N_t - N_0 over N_0, photon sums per annulus) of every view"),
        "response_offset_r500c": (("n", "views"), "f4", "distance of the strongest gradient response from the centre"),
        "off_centre": (("n", "views"), "i1", "1 if response_offset_r500c > interpret.offcentre_r500c"),
        "dn_map": (("n", "iterations", "pixels", "pixels"), "i4", "Delta N = N_t - N_0 of view attrs['map_view']"),
        "small_change_map": (("n", "iterations", "pixels", "pixels"), "i1",
                             "1 where |Delta N| <= interpret.small_change x N_0 (view attrs['map_view'])"),
        "profile_median": (("iterations", "bins"), "f4", "median profile over all views (written when all are done)"),
        "profile_p16": (("iterations", "bins"), "f4", "16th percentile of the profiles"),
        "profile_p84": (("iterations", "bins"), "f4", "84th percentile of the profiles"),
    },
    "report": {  # unit: the report (one); "apertures" = exact R500c, then each report.lx_aperture_errors
        "lx_net_counts": (("clusters", "axes", "apertures"), "f8", "background-subtracted counts in the L_X annulus"),
        "lx_covered": (("clusters", "axes", "apertures"), "f4", "fraction of the L_X annulus inside the image"),
        "lx_erg_s": (("clusters", "axes", "apertures"), "f8", "core-excised L_X from the image [erg/s]"),
        "lx_pred_log_m500c": (("clusters", "axes", "apertures"), "f4",
                              "log10 M500c from the L_X-M power law of the cluster's test fold"),
    },
}
PENDING, DONE, FAILED = 0, 1, -1
_SHARDS_ANNOUNCED = False
_ERROR_LEN = 256

#: Distributions whose versions go into every stage's provenance.
_PROVENANCE_PACKAGES = ("hpcmass", "numpy", "scipy", "h5py", "mpi4py", "astropy", "yt", "pyxsim", "soxs",
                        "colossus", "tensorflow", "tf-keras", "horovod", "pydantic", "matplotlib")


def store_path(workdir: str | Path) -> Path:
    return Path(workdir) / STORE_NAME


def stage_dir(workdir: str | Path, stage: str) -> Path:
    """Directory for a stage's files that live beside the store."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return Path(workdir) / stage


def parallel_hdf5() -> bool:
    return bool(h5py.get_config().mpi)


def sharded(comm) -> bool:
    """Whether this run writes per-rank shard files instead of one parallel file."""
    if comm is None or comm.Get_size() == 1:
        return False
    return not parallel_hdf5() or os.environ.get("HPCMASS_STORE_SHARDS") == "1"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for dist in _PROVENANCE_PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    versions["hdf5"] = h5py.version.hdf5_version
    from mpi4py import MPI

    versions["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    return versions


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


# --- the writer lock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _LockInfo:
    host: str
    pid: int
    stage: str
    since: str
    slurm_job: str | None

    @classmethod
    def mine(cls, stage: str) -> "_LockInfo":
        return cls(socket.gethostname(), os.getpid(), stage, utc_now(), os.environ.get("SLURM_JOB_ID"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed rank whose parent (mpirun) is gone can linger as a zombie until reaped
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


#: How long a lock holder on this host may take to die before it counts as alive: mpirun returns
#: before every killed rank is reaped, so a job re-run at once would otherwise be refused.
_DYING_GRACE_S = 3.0


def _stale_reason(held: _LockInfo) -> str | None:
    if held.slurm_job and held.slurm_job == os.environ.get("SLURM_JOB_ID") and held.pid != os.getpid():
        return f"SLURM job {held.slurm_job} was requeued"
    if held.host != socket.gethostname():
        return None
    deadline = time.monotonic() + _DYING_GRACE_S
    while _pid_alive(held.pid):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return f"process {held.pid} on {held.host} is gone"


@contextlib.contextmanager
def writer_lock(path: Path, stage: str, log=None) -> Iterator[None]:
    """Hold ``<store>.lock`` for the duration; refuse if another live writer holds it."""
    lock = path.with_name(path.name + ".lock")
    mine = _LockInfo.mine(stage)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = _LockInfo(**json.loads(lock.read_text()))
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError, TypeError):
                # Busy: also what a lock just created by another process (not yet written) looks like.
                raise StoreBusyError(f"{lock}: unreadable lock file; if no hpcmass job uses {path}, delete it") from None
            reason = _stale_reason(held)
            if reason is None:
                raise StoreBusyError(
                    f"{path} is being written by pid {held.pid} on {held.host} (stage {held.stage}, since "
                    f"{held.since}{', SLURM job ' + held.slurm_job if held.slurm_job else ''}); wait for it to end, "
                    f"or if it is dead delete {lock}"
                )
            if log:
                log.warning("removing stale lock %s (%s)", lock, reason)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(mine.__dict__, fh)
        break
    else:
        raise StoreError(f"{lock}: could not take the writer lock")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(lock.read_text()).get("pid") == mine.pid:
                lock.unlink()


@contextlib.contextmanager
def _collective_lock(path: Path, stage: str, comm, log) -> Iterator[None]:
    """Rank 0 holds the writer lock while every rank works; a refusal is raised on all ranks."""
    rank = comm.Get_rank()
    error = None
    lock_cm = writer_lock(path, stage, log) if rank == 0 else contextlib.nullcontext()
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock_cm.__enter__()
        except StoreError as e:
            error = e  # the exception itself, so that every rank raises the same type (busy: retryable)
    error = comm.bcast(error, root=0)
    if error:
        raise error
    try:
        yield
    finally:
        if rank == 0:
            lock_cm.__exit__(None, None, None)


def _join_shards(f: h5py.File, stage: str, shard_dir: Path, log) -> None:
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
                if name not in ("done", "error"):
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
        g.create_virtual_dataset(name, layout, fillvalue=0)
    f.flush()
    g["done"][...], g["error"][...] = states, errors
    f.flush()


# --- opening -----------------------------------------------------------------------------------


def _open_h5(path: Path, mode: str, comm) -> h5py.File:
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
            raise KeyError(f"/{self.stage}/{name} is not declared in hpcmass.store.LAYOUT") from None
        dims.setdefault("n", self.n_units)
        shape = tuple(d if isinstance(d, int) else dims[d] for d in shape_spec)
        return self.require_dataset(name, shape, dtype, fillvalue=fillvalue)

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
        self._error[unit] = reason.encode("utf-8", "replace")[: _ERROR_LEN - 1]
        self._done[unit] = FAILED
        if self._base_states is not None:
            self.store.file.flush()

    def set_attrs(self, **attrs) -> None:
        """Collective: every rank must call with the same values."""
        if self._base_states is not None:
            self.deferred_attrs.update(attrs)
            return
        for k, v in attrs.items():
            self.group.attrs[k] = v
        self.store.file.flush()

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
        with _open_h5(path, "r", None) as f:
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
        with _collective_lock(path, stage, comm, log):
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
            with _open_h5(path, "a", comm) as f:
                store = cls(path, f, comm)
                store._prepare(plan, prov)
                writer = store._begin(stage, n_units, unit, prov)
                try:
                    yield writer
                finally:
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
            with _open_h5(path, "a", None) as f:
                store = cls(path, f)
                store._prepare(plan, prov)
                store._begin(stage, n_units, unit, prov)
                _join_shards(f, stage, shard_dir, log)  # units a killed run finished
                base = f[stage]["done"][...]
            shard_dir.mkdir(parents=True, exist_ok=True)
        base = comm.bcast(base, root=0)
        shard = shard_dir / f"{stage}-{prov['run_id']}-r{rank}.h5"
        try:
            with h5py.File(shard, "w") as sf:
                g = sf.create_group(stage)
                g.create_dataset("done", shape=(n_units,), dtype="i1", fillvalue=PENDING)
                g.create_dataset("error", shape=(n_units,), dtype=f"S{_ERROR_LEN}")
                sf.flush()
                writer = StageWriter(cls(shard, sf, comm), stage, n_units, unit, base_states=base)
                yield writer
        finally:
            comm.Barrier()
            if rank == 0:
                with _open_h5(path, "a", None) as f:
                    _join_shards(f, stage, shard_dir, log)
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
                present = [s for s in STAGES if s in f]
                stored = {s: (f[s].attrs.get("params_hash", ""), f[s].attrs.get("params_identity", "{}"))
                          for s in present}
        except OSError as e:
            return StoreError(f"{path}: cannot open the store ({str(e).splitlines()[0]}); it may be truncated or "
                              f"not an HDF5 file. Move it aside and re-run from the first stage, or use another --workdir")
        drop = []
        if restart_from is not None:
            drop = [s for s in present if STAGES.index(s) >= STAGES.index(restart_from)]
        for s in present:
            if s in drop or STAGES.index(s) > STAGES.index(stage):
                continue
            if stored[s][0] != params.stage_hash(s):
                changed = _diff(json.loads(stored[s][1]), params.stage_identity(s))
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
            g.create_dataset("error", shape=(n_units,), dtype=f"S{_ERROR_LEN}", track_times=False)
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


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    """Human summary of changed keys between two nested dicts: 'catalog.n_clusters: 20 -> 30'."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _diff(a, b, name + ".")
            if sub:
                out.append(sub)
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return "; ".join(out)


def status(workdir: str | Path) -> dict:
    """Per-stage progress from the store alone (no params needed)."""
    path = store_path(workdir)
    if not path.exists():
        return {"store": str(path), "exists": False, "stages": {s: None for s in STAGES}}
    with Store.read(workdir) as store:
        return {"store": str(path), "exists": True, "layout_version": int(store.file.attrs.get("layout_version", 0)),
                "stages": {s: store.stage_state(s) for s in STAGES}}
