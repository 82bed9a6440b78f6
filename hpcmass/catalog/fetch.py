"""Download the paper's TNG300 clusters from the TNG web API into the layout the loader reads.

Steps (https://www.tng-project.org/data/docs/api/): the simulation and snapshot
records; the group catalogue fields Group_M_Crit500, Group_R_Crit500 and GroupPos
(``files/groupcat-<snap>/?Group=<field>``, one HDF5 file each), joined into
``groups_<snap>/fof_subhalo_tab_<snap>.0.hdf5``; then, for every FoF halo in the mass range, its
gas cutout (``snapshots/<snap>/halos/<id>/cutout.hdf5?gas=<fields>``) as ``cutouts/halo_<id>.hdf5``.

Every file is downloaded to ``<name>.part`` (resumed with an HTTP Range request after an
interruption), checked against the announced size, validated, and only then renamed into
place; ``manifest.json`` records the final sizes, so a re-run skips what is complete and
re-fetches what is not. Requests carry the ``api-key`` header from $TNG_API_KEY.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import ParamsError, StageError
from . import tng

API_URL = "https://www.tng-project.org/api/"
KEY_ENV = "TNG_API_KEY"
_CHUNK = 1 << 20


class FetchError(StageError):
    """A download could not be completed; the message says why and what to do."""


class Client:
    """Minimal TNG web API client: JSON records and resumable, size-checked file downloads."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0, where: str = ""):
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.key, self.timeout, self.where = api_key, timeout, where

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base, path)

    def _open(self, url: str, headers: dict | None = None):
        req = urllib.request.Request(url, headers={"api-key": self.key, **(headers or {})})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise FetchError(f"{url}: the TNG API refused the key in ${KEY_ENV} (HTTP {e.code}); copy yours "
                                 f"from https://www.tng-project.org/users/profile/") from None
            if e.code == 416:
                raise
            raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise FetchError(f"cannot reach {url} ({reason}): fetch-tng needs access to the TNG web API; run it on "
                             f"a login node with internet access{self.where}") from None

    def json(self, path: str) -> dict:
        url = self.url(path)
        with self._open(url, {"Accept": "application/json"}) as resp:
            try:
                return json.loads(resp.read())
            except ValueError:
                raise FetchError(f"{url}: expected a JSON reply") from None

    def download(self, path: str, dest: Path) -> Path:
        """Fetch ``path`` into ``dest.part`` (resuming what is there); returns the verified .part file."""
        url = self.url(path)
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        try:
            resp = self._open(url, {"Range": f"bytes={have}-"} if have else None)
        except urllib.error.HTTPError:  # 416: nothing left to send from ``have``; start again
            part.unlink()
            return self.download(path, dest)
        with resp:
            if resp.status == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+)", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    raise FetchError(f"{url}: unexpected Content-Range {resp.headers.get('Content-Range')!r}")
                total, mode = int(m.group(2)), "ab"
            else:
                length = resp.headers.get("Content-Length")
                total, mode, have = (int(length) if length is not None else None), "wb", 0
            try:
                with open(part, mode) as fh:
                    shutil.copyfileobj(resp, fh, _CHUNK)
            except (OSError, http.client.HTTPException) as e:
                raise FetchError(f"{url}: transfer interrupted after {part.stat().st_size} bytes "
                                 f"({type(e).__name__}); re-run `hpcmass fetch-tng` to resume") from None
        size = part.stat().st_size
        if total is not None and size != total:
            raise FetchError(f"{url}: received {size} of {total} bytes; re-run `hpcmass fetch-tng` to resume")
        return part


class Manifest:
    """``manifest.json``: relative path -> size of every file fetched and verified."""

    def __init__(self, root: Path):
        self.path = root / "manifest.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"files": {}}

    def complete(self, path: Path) -> bool:
        rel = str(path.relative_to(self.path.parent))
        return path.exists() and self.data["files"].get(rel) == path.stat().st_size

    def add(self, path: Path, **info) -> None:
        self.data["files"][str(path.relative_to(self.path.parent))] = path.stat().st_size
        self.data.update(info)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))


def _check_hdf5(part: Path, url: str, need: list[str]) -> None:
    try:
        with h5py.File(part, "r") as f:
            missing = [n for n in need if n not in f]
    except OSError as e:
        part.unlink()
        raise FetchError(f"{url}: the reply is not a readable HDF5 file ({tng._first_line(e)}); re-run") from None
    if missing:
        raise FetchError(f"{url}: the file lacks {', '.join(missing)}")


def normalise_cutout(part: Path, sim: dict, snap: dict) -> None:
    """Give a downloaded cutout the Header attributes yt needs to open it as cosmological Arepo data.

    TNG cutouts copy the snapshot header; any of these that is absent is filled from the API's
    simulation and snapshot records (BoxSize, Time, Redshift, cosmology, NumPart_Total, ...).
    """
    with h5py.File(part, "r+") as f:
        h = f["Header"].attrs
        n = int(f["PartType0/Masses"].shape[0])
        z = float(snap["redshift"])
        fill = {"BoxSize": float(sim["boxsize"]), "Redshift": z, "Time": 1.0 / (1.0 + z),
                "HubbleParam": float(sim["hubble"]), "Omega0": float(sim["omega_0"]),
                "OmegaLambda": float(sim["omega_L"]), "NumFilesPerSnapshot": 1,
                "NumPart_ThisFile": np.array([n, 0, 0, 0, 0, 0], dtype=np.int32),
                "MassTable": np.zeros(6)}
        fill["NumPart_Total"] = np.asarray(h.get("NumPart_ThisFile", fill["NumPart_ThisFile"])).astype(np.uint32)
        for k, v in fill.items():
            if k not in h:
                h[k] = v


def _has_group_fields(path: Path) -> bool:
    """Whether a staged group catalogue holds every field the selection rules read (older stagings
    lack the M200c and FoF masses: those are fetched again)."""
    with h5py.File(path, "r") as f:
        return all(f"Group/{k}" in f for k in tng.GROUP_FIELDS)


def fetch_tng(tng_dir: str | Path, *, simulation: str, snapshot: int,
              selection: tuple[tng.Selection, tuple[tng.Selection, ...]], n_clusters: int,
              api_url: str = API_URL, api_key: str | None = None, timeout: float = 60.0, log=None) -> dict:
    """Stage the TNG inputs for ``hpcmass catalog`` (source: tng300) in ``tng_dir``; returns a summary.

    ``selection`` is the halo rule and the candidates whose counts it logs (stage.halo_selection);
    a rule that does not give ``n_clusters`` haloes stops it after the group catalogue, before any
    cutout is downloaded (ParamsError naming every rule's count).
    """
    tng_dir = Path(tng_dir)
    api_key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
    if not api_key:
        raise FetchError(f"${KEY_ENV} is not set: put your TNG API key in it (from "
                         f"https://www.tng-project.org/users/profile/ after registering)")
    client = Client(api_url, api_key, timeout=timeout,
                    where=f", then use catalog.tng_dir={tng_dir} wherever that directory is visible")
    sim = client.json(f"{simulation}/")
    snap = client.json(f"{simulation}/snapshots/{snapshot}/")
    for key in ("boxsize", "hubble", "omega_0", "omega_L"):
        if key not in sim:
            raise FetchError(f"{client.url(simulation + '/')}: the simulation record lacks {key!r}")
    tng_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(tng_dir)
    info = {"api": client.base, "simulation": simulation, "snapshot": snapshot}

    groups = tng.group_catalog_path(tng_dir, snapshot)
    if not manifest.complete(groups) or not _has_group_fields(groups):
        fields = {}
        for field in tng.GROUP_FIELDS:
            dest = tng_dir / "download" / f"fof_subhalo_tab_{snapshot:03d}.Group.{field}.hdf5"
            path = f"{simulation}/files/groupcat-{snapshot}/?Group={field}"
            if not manifest.complete(dest):
                part = client.download(path, dest)
                _check_hdf5(part, client.url(path), [f"Group/{field}"])
                os.replace(part, dest)
                manifest.add(dest, **info)
            with h5py.File(dest, "r") as f:
                fields[field] = f[f"Group/{field}"][...]
        header = tng.group_catalog_header(n_groups=len(fields["Group_M_Crit500"]), box_size=sim["boxsize"],
                                          hubble=sim["hubble"], omega_m=sim["omega_0"], omega_l=sim["omega_L"],
                                          redshift=max(float(snap["redshift"]), 0.0))
        tng.write_group_catalog(groups, header, fields)
        manifest.add(groups, **info)
        if log:
            log.info("fetch-tng: group catalogue with %d groups in %s", header["Ngroups_Total"], groups)

    inputs = tng.open_inputs(tng_dir, snapshot, *selection)
    if log:
        log.info("fetch-tng: the group catalogue holds %s", tng.describe_counts(inputs.counts))
    mismatch = tng.sample_size_mismatch(inputs, selection[0], n_clusters)
    if mismatch:
        raise ParamsError(mismatch)
    query = urllib.parse.urlencode({"gas": ",".join(tng.GAS_FIELDS)}, safe=",")
    fetched = 0
    for n, gid in enumerate(inputs.group_id, 1):
        dest = inputs.cutout(gid)
        if manifest.complete(dest):
            continue
        path = f"{simulation}/snapshots/{snapshot}/halos/{int(gid)}/cutout.hdf5?{query}"
        part = client.download(path, dest)
        _check_hdf5(part, client.url(path), ["Header"] + [f"PartType0/{k}" for k in tng.GAS_FIELDS])
        normalise_cutout(part, sim, snap)
        os.replace(part, dest)
        manifest.add(dest, **info)
        fetched += 1
        if log:
            log.info("fetch-tng: halo %d (%d/%d), %.1f MB", gid, n, len(inputs.group_id), dest.stat().st_size / 1e6)
    return {"haloes": len(inputs.group_id), "fetched": fetched, "tng_dir": str(tng_dir)}
