"""`hpcmass fetch-tng` over real HTTP against a loopback stand-in for the TNG web API that serves
files the synthetic generator wrote; then `hpcmass catalog` reads what it staged."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, hpcmass

from hpcmass.catalog import tng
from hpcmass.catalog.stage import run as run_catalog
from hpcmass.mpi import get_logger, world
from hpcmass.params import load_params
from hpcmass.store.readers import load_catalog

CI = ROOT / "params" / "ci.yaml"
KEY = "test-key-123"


class FakeTngApi:
    """Serves a TNG-layout directory the way the TNG API does (routes, api-key, Range, Content-Length)."""

    def __init__(self, src: Path, files: Path):
        self.src, self.requests, self.drop_once = src, [], set()
        with h5py.File(tng.group_catalog_path(src, 99), "r") as f:
            header = dict(f["Header"].attrs)
            self.sim = {"name": "TNG300-1", "boxsize": float(header["BoxSize"]), "hubble": float(header["HubbleParam"]),
                        "omega_0": float(header["Omega0"]), "omega_L": float(header["OmegaLambda"])}
            self.fields = {}
            for field in tng.GROUP_FIELDS:  # one file per field, as files/groupcat-99/?Group=<field> returns
                path = files / f"fof_subhalo_tab_099.Group.{field}.hdf5"
                with h5py.File(path, "w") as out:
                    out.create_group("Header").attrs.update(header)
                    out.create_group("Group").create_dataset(field, data=f[f"Group/{field}"][...])
                self.fields[field] = path
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                api.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("api-key") != KEY:
                    return self._send(403, b'{"detail": "Invalid API key."}', "application/json")
                if url.path == "/api/TNG300-1/":
                    return self._send(200, json.dumps(api.sim).encode(), "application/json")
                if url.path == "/api/TNG300-1/snapshots/99/":
                    return self._send(200, json.dumps({"number": 99, "redshift": 0.0}).encode(), "application/json")
                if url.path == "/api/TNG300-1/files/groupcat-99/" and query.get("Group", [""])[0] in api.fields:
                    return self._file(api.fields[query["Group"][0]])
                parts = url.path.strip("/").split("/")
                if parts[:5] == ["api", "TNG300-1", "snapshots", "99", "halos"] and parts[6:] == ["cutout.hdf5"]:
                    assert set(query["gas"][0].split(",")) >= set(tng.GAS_FIELDS)
                    return self._file(tng.cutout_path(api.src, int(parts[5])))
                self._send(404, b'{"detail": "Not found."}', "application/json")

            def _send(self, code, body, ctype, extra=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: Path):
                data = path.read_bytes()
                extra = {"Content-Disposition": f"attachment; filename={path.name}"}
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._send(206, data[start:], "application/x-hdf5", extra)
                if self.path in api.drop_once:  # announce the whole file, send half, hang up
                    api.drop_once.discard(self.path)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, data, "application/x-hdf5", extra)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cutout_request(self, gid: int) -> str:
        gas = ",".join(tng.GAS_FIELDS)
        return f"/api/TNG300-1/snapshots/99/halos/{gid}/cutout.hdf5?gas={gas}"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("synthetic")
    run_catalog(workdir, load_params(CI), world(), log=get_logger(world()))
    served = tmp_path_factory.mktemp("served")
    shutil.copytree(workdir / "catalog", served / "tng")
    # A cutout whose header lacks the cosmology and box, as the fetcher must be able to repair.
    with h5py.File(tng.cutout_path(served / "tng", 0), "r+") as f:
        for key in ("BoxSize", "Omega0", "OmegaLambda", "Time", "NumPart_Total"):
            del f["Header"].attrs[key]
    server = FakeTngApi(served / "tng", tmp_path_factory.mktemp("files"))
    yield server, workdir
    server.server.shutdown()


def _fetch(api_url, dest, env, *extra):
    return hpcmass("fetch-tng", "--params", CI, "--set", "catalog.source=tng300", "--set",
                   f"catalog.tng_dir={dest}", "--api-url", api_url, *extra, env=env, timeout=120)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_fetch_is_resumable_size_checked_and_feeds_the_catalog(api, tmp_path, env):
    server, synthetic = api
    env["TNG_API_KEY"] = KEY
    dest = tmp_path / "tng300"
    server.drop_once.add(server.cutout_request(3))
    server.requests.clear()
    first = _fetch(server.url, dest, env)
    part = tng.cutout_path(dest, 3).with_name("halo_3.hdf5.part")
    half, full = part.stat().st_size, tng.cutout_path(server.src, 3).stat().st_size
    assert first.returncode == 1 and half == full // 2
    # The size check catches the short transfer (the server hung up without an error).
    assert f"received {half} of {full} bytes; re-run `hpcmass fetch-tng` to resume" in first.stderr
    assert all(headers.get("api-key") == KEY for _, headers in server.requests)
    assert not tng.cutout_path(dest, 3).exists() and tng.cutout_path(dest, 2).exists()

    server.requests.clear()
    second = _fetch(server.url, dest, env)
    assert second.returncode == 0, second.stderr
    paths = [p for p, _ in server.requests]
    # Finished files are not fetched again; the broken one resumes where it stopped.
    assert not any("halos/2/" in p or "groupcat" in p for p in paths)
    resumed = [h for p, h in server.requests if "halos/3/" in p]
    assert len(resumed) == 1 and resumed[0]["range"] == f"bytes={half}-"
    for i in range(1, 10):
        assert _digest(tng.cutout_path(dest, i)) == _digest(tng.cutout_path(server.src, i))
    with h5py.File(tng.cutout_path(dest, 0), "r") as f, h5py.File(tng.cutout_path(synthetic / "catalog", 0), "r") as g:
        for key in ("BoxSize", "Omega0", "OmegaLambda", "Time", "NumPart_Total"):
            np.testing.assert_array_equal(f["Header"].attrs[key], g["Header"].attrs[key])
        np.testing.assert_array_equal(f["PartType0/Density"][...], g["PartType0/Density"][...])
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["files"]["cutouts/halo_3.hdf5"] == tng.cutout_path(dest, 3).stat().st_size

    server.requests.clear()
    assert _fetch(server.url, dest, env).returncode == 0 and len(server.requests) == 2  # only the two records

    # A group catalogue staged before the M200c and FoF masses were read is rebuilt with them.
    with h5py.File(tng.group_catalog_path(dest, 99), "r+") as f:
        del f["Group/Group_M_Crit200"]
    assert _fetch(server.url, dest, env).returncode == 0
    with h5py.File(tng.group_catalog_path(dest, 99), "r") as f:
        assert all(f"Group/{k}" in f for k in tng.GROUP_FIELDS)

    run = hpcmass("catalog", "--params", CI, "--workdir", tmp_path / "w", "--set", "catalog.source=tng300",
                  "--set", f"catalog.tng_dir={dest}", env=env)
    assert run.returncode == 0, run.stderr
    a, b = load_catalog(synthetic), load_catalog(tmp_path / "w")
    assert b.source == "tng300" and b.done.all()
    for col in ("cluster_id", "log_m500c", "r500c_kpc", "center_ckpch", "n_gas_cells", "lx_ce_erg_s", "k0_kev_cm2"):
        np.testing.assert_array_equal(a.columns[col], b.columns[col])


def test_fetch_errors_are_one_clear_line(api, tmp_path, env):
    server, _ = api
    env.pop("TNG_API_KEY", None)
    proc = _fetch(server.url, tmp_path / "d", env)
    assert proc.returncode == 1 and "$TNG_API_KEY is not set" in proc.stderr

    # A rule that does not give catalog.n_clusters stops before any cutout, naming every rule's count.
    env["TNG_API_KEY"] = KEY
    server.requests.clear()
    proc = _fetch(server.url, tmp_path / "e", env, "--set", "catalog.n_clusters=12")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds 10 haloes with 13.57 <= log10 M500c <= 15.06" in proc.stderr
    assert "set catalog.n_clusters=10" in proc.stderr and "with log10 M200c >= 14" in proc.stderr
    assert not any("/halos/" in p for p, _ in server.requests)

    env["TNG_API_KEY"] = "wrong"
    proc = _fetch(server.url, tmp_path / "d", env)
    assert proc.returncode == 1 and "refused the key in $TNG_API_KEY (HTTP 403)" in proc.stderr

    with socket.socket() as s:  # a port nobody listens on: the network is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _fetch(f"http://127.0.0.1:{port}/api/", tmp_path / "d", env, "--timeout", "5")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1
    assert "cannot reach" in lines[0] and "run it on a login node with internet access" in lines[0]
