"""Stage SOXS's real data files for offline observe runs, with SOXS's own downloader and hashes.

SOXS fetches its APEC tables, responses and backgrounds from its data server on first use
(pooch, sha256-checked). Compute nodes usually have no network, so ``hpcmass stage-data`` runs
that same download once, on a machine that has it, into ``observe.data_dir``; the observe stage
then finds the files there (and SOXS re-checks their hashes) without any network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import StageError
from . import xray


def stage_data(observe, log=None) -> list[Path]:
    """Download (or verify) every file a ``soxs``-mode observe run with these ``observe`` params needs
    (its instrument's too) into ``observe.data_dir``."""
    data_dir = Path(observe.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpcmass-stage-data-") as config_home:
        names = xray.table_files(observe)
        if observe.instrument != xray.SIMPLE_ACISI:
            spec = xray.registry_instrument(observe.instrument, data_dir, Path(config_home))
            names += xray.instrument_files(spec, observe.particle_background)
        missing = xray.missing_soxs_files(data_dir, names)
        # SOXS's downloader honours SOXS_DATA_DIR over its argument: point both at data_dir.
        with xray.temporary_environ(XDG_CONFIG_HOME=config_home, SOXS_DATA_DIR=str(data_dir)):
            import pooch
            import soxs.utils

            pooch.get_logger().setLevel("WARNING")  # our log says what is fetched
            fetcher = soxs.utils.PoochHandle(cache_dir=str(data_dir))
            paths = []
            for name in names:
                if log:
                    log.info("%s %s", "fetching" if name in missing else "verified", name)
                try:
                    paths.append(Path(fetcher.fetch(name)))
                except Exception as e:  # pooch raises the HTTP library's errors; say what to do instead
                    detail = (str(e).splitlines() or ["no detail"])[0]
                    raise StageError(
                        f"could not download {name} from SOXS's data server into {data_dir} "
                        f"({type(e).__name__}: {detail[:160]}); stage-data needs "
                        f"network access: run it on a machine that has it (e.g. a login node) and copy {data_dir} here"
                    ) from None
    still = xray.missing_soxs_files(data_dir, names)
    if still:
        raise StageError(f"{data_dir}: {', '.join(still)} still fail SOXS's hash check after downloading")
    return paths
