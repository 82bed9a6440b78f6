"""Provenance recorded in every stage group: times, package versions, git commit, params changes."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

#: Distributions whose versions go into every stage's provenance.
PROVENANCE_PACKAGES = ("hpcmass", "numpy", "scipy", "h5py", "mpi4py", "astropy", "yt", "pyxsim", "soxs",
                       "colossus", "tensorflow", "tf-keras", "horovod", "pydantic", "matplotlib")


def attr_value(v):
    """An HDF5 attribute as a plain Python value (str, float, int, list)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for dist in PROVENANCE_PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    versions["hdf5"] = h5py.version.hdf5_version
    from mpi4py import MPI

    versions["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    # TensorFlow's CPU kernels (set in hpcmass/__init__.py): they change the last bits of trained weights.
    versions["tf_enable_onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return versions


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def params_diff(old: dict, new: dict, prefix: str = "") -> str:
    """Human summary of changed keys between two nested dicts: 'catalog.n_clusters: 20 -> 30'."""
    from ..params import LATER_KEYS

    later = {f"{section}.{key}": value for (section, key), value in LATER_KEYS.items()}
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        # a stage identity leaves a key added later out at its default: show that default
        a, b = old.get(key, later.get(name)), new.get(key, later.get(name))
        if isinstance(a, dict) and isinstance(b, dict):
            sub = params_diff(a, b, name + ".")
            if sub:
                out.append(sub)
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return "; ".join(out)
