"""``hpcmass fetch-tng``: stage the TNG300 inputs on a machine with network access (rank 0 only)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ParamsError
from ..mpi import get_logger, on_root
from .fetch import API_URL, KEY_ENV, fetch_tng
from .stage import halo_selection

HELP = (f"download the paper's TNG300-1 clusters (group catalogue + gas cutouts) from the TNG web API into "
        f"catalog.tng_dir; needs network access and ${KEY_ENV}; resumable")


def add_arguments(parser) -> None:
    parser.add_argument("--tng-dir", metavar="DIR", help="where to put the data (default: catalog.tng_dir)")
    parser.add_argument("--api-url", default=API_URL, help=f"TNG web API base URL (default {API_URL})")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (s)")


def run(args, params, comm) -> int:
    cp = params.catalog
    tng_dir = args.tng_dir or cp.tng_dir
    if not tng_dir:
        raise ParamsError("fetch-tng: no target directory; give --tng-dir or set catalog.tng_dir")

    def fetch():
        log = get_logger(comm)
        summary = fetch_tng(Path(tng_dir), simulation=cp.tng_simulation, snapshot=cp.tng_snapshot,
                            selection=halo_selection(params), n_clusters=cp.n_clusters,
                            api_url=args.api_url, timeout=args.timeout, log=log)
        log.info("fetch-tng: %d haloes selected, %d downloaded now, all in %s; next: hpcmass catalog with "
                 "catalog.source=tng300, catalog.tng_dir=%s", summary["haloes"], summary["fetched"], tng_dir, tng_dir)

    on_root(comm, fetch)  # the other ranks sleep through the download; its error is raised on every rank
    return 0
