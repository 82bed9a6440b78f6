"""``hpcmass compare RUN_A RUN_B``: two trained runs of one sample side by side (:mod:`.compare`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ParamsError
from ..mpi import get_logger

HELP = ("two trained runs of the same clusters, folds and seed side by side: each CNN scatter with its 68% "
        "interval and their paired-bootstrap difference; with both runs' exported models, each on the other's "
        "images (rank 0)")


def add_arguments(parser) -> None:
    # Checked in run(), not by argparse: every subcommand parses with the common options alone.
    parser.add_argument("runs", nargs="*", type=Path, metavar="WORKDIR",
                        help="two workdirs whose train stage is complete (the first is the reference)")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="also write compare.md and compare.json (with provenance) into this directory")


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    from .compare import compare, format_markdown

    if len(args.runs) != 2:
        raise ParamsError(f"expected two workdirs (RUN_A RUN_B), got {len(args.runs)}")
    result = compare(*args.runs, n_resamples=params.report.bootstrap_resamples)
    table = format_markdown(result)
    print(table)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "compare.md").write_text(table + "\n")
        (args.output / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
        get_logger(comm).info("wrote %s and %s", args.output / "compare.md", args.output / "compare.json")
    return 0
