"""``hpcmass export-model``: the trained fold models, their geometry, scaling, calibration and provenance
in one directory that ``hpcmass predict`` loads on any machine with hpcmass (no store needed).

Layout: :mod:`hpcmass.predict.bundle`. The calibration (:mod:`hpcmass.predict.calibration`) is
computed here from the store's held-out predictions; its measured coverage is printed.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParamsError
from ..mpi import get_logger
from .domain import BLANK_FIELDS

HELP = "write the trained fold models, geometry, scaling, calibration and provenance to a directory for `predict`"


def add_arguments(parser) -> None:
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="directory to write (default: <workdir>/model; an earlier export there is replaced)")
    parser.add_argument("--blank-fields", type=int, default=BLANK_FIELDS, metavar="N",
                        help=f"blank-sky mocks that calibrate the cluster detection: half set its threshold, half "
                             f"measure its false-positive rate (default {BLANK_FIELDS})")


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    from .bundle import DEFAULT_DIR, export_model

    if args.blank_fields < 4:
        raise ParamsError(f"--blank-fields {args.blank_fields}: expected at least 4 (half set the detection threshold, "
                          f"half measure its false-positive rate)")
    out = args.output or Path(args.workdir) / DEFAULT_DIR
    manifest = export_model(args.workdir, out, args.params, log=get_logger(comm), blank_fields=args.blank_fields)
    cal, dom = manifest["calibration"], manifest["domain"]
    det, cov = dom["detection"], dom["coverage"]
    print(f"{out}: {len(manifest['models'])} fold models; 68% interval = central ± {cal['half_width']:.3f} dex; "
          f"measured coverage on held-out images {100 * cal['coverage']:.1f}% ({cal['covered']}/{cal['n_images']}, "
          f"leave-one-fold-out)")
    for name, d in (("cluster detection", det), ("with an exposure map (predict --expmap)", det["exposure_map"])):
        fp = [f"{f['false_positives']}/{f['n_test']} blank fields{what} (95% upper limit "
              f"{100 * f['false_positive_rate_upper95']:.0f}%)"
              for f, what in ((d, ""), (d.get("with_point_sources"), " with point sources")) if f]
        print(f"{name}: threshold {d['threshold_sigma']:.1f} sigma; false positives {', '.join(fp)}; "
              f"completeness {100 * d['completeness']:.1f}% of {d['n_training_images']} training images")
    print(f"field coverage: refused below {100 * cov['refuse_below']:.0f}% of the cells (every training image: "
          f"{100 * cov['training_min']:.0f}% or more); exposure: refused below "
          f"{dom['exposure']['min_fraction'] * dom['exposure']['training_ks']:.3g} ks")
    if "range_ks" in dom["exposure"]:
        print("interval by exposure (held-out images): " + "; ".join(
            f"{lv['exposure_ks'][0]:.3g}-{lv['exposure_ks'][1]:.3g} ks ±{lv['half_width']:.3f} dex, coverage "
            f"{100 * lv['coverage']:.1f}% ({lv['n_images']} images)" for lv in dom["exposure"]["levels"]))
    ood = dom["ood"]
    held = ood["heldout"]
    off = ", ".join(f"{what} {held[key]:.3f} dex" for what, key in (("warned", "rms_delta_warned"),
                                                                     ("the rest", "rms_delta_not_warned"))
                    if held[key] is not None)
    print(f"out of distribution: warned above {ood['warn_above']:.3g} (held-out {100 * ood['level']:.0f}% quantile; "
          f"median {held['median']:.3g}); false alarms on held-out images {held['false_alarms']}/{held['n_images']} "
          f"(leave-one-fold-out); held-out rms error {off}")
    acc = dom["heldout_accepted"]
    for name, a in (("", acc), (" with their exposure maps", acc["exposure_map"])):
        if a["coverage"] is not None:
            print(f"held-out images the checks accept{name}: {a['images']}/{acc['of']}, interval coverage "
                  f"{100 * a['coverage']:.1f}% (all: {100 * acc['coverage_all']:.1f}%)")
    return 0
