"""``hpcmass export-model``: the trained fold models, their geometry, scaling, calibration and provenance
in one directory that ``hpcmass predict`` loads on any machine with hpcmass (no store needed).

Layout: :mod:`hpcmass.predict.bundle`. The calibration (:mod:`hpcmass.predict.calibration`) is
computed here from the store's held-out predictions; its measured coverage is printed.
"""

from __future__ import annotations

from pathlib import Path

from ..mpi import get_logger

HELP = "write the trained fold models, geometry, scaling, calibration and provenance to a directory for `predict`"


def add_arguments(parser) -> None:
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="directory to write (default: <workdir>/model; an earlier export there is replaced)")


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    from .bundle import export_model

    out = args.output or Path(args.workdir) / "model"
    manifest = export_model(args.workdir, out, args.params, log=get_logger(comm))
    cal = manifest["calibration"]
    print(f"{out}: {len(manifest['models'])} fold models; 68% interval = central ± {cal['half_width']:.3f} dex; "
          f"measured coverage on held-out images {100 * cal['coverage']:.1f}% ({cal['covered']}/{cal['n_images']}, "
          f"leave-one-fold-out)")
    return 0
