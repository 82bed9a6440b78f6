"""``hpcmass predict EVENTS.fits... --model DIR``: log10 M500c of observed clusters, with a calibrated interval.

Each event file is checked and binned exactly as the training images (the model directory's field,
pixels and energy bands; :mod:`hpcmass.predict.events`), centred on ``--center`` or the X-ray peak; every
fold model predicts the image's 8 views, and the interval is the one calibrated on the held-out
predictions (:mod:`hpcmass.predict.calibration`). Runs on one process (rank 0 of a job).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError, ParamsError
from ..images import bands_label
from ..mpi import get_logger

HELP = "predict log10 M500c, with a calibrated interval, of clusters in X-ray event files (an exported model)"
#: Relative difference of exposure time from the training's above which a prediction is flagged.
EXPOSURE_TOLERANCE = 0.1


def add_arguments(parser) -> None:
    # Checked in run(), not by argparse: every subcommand parses with the common options alone.
    parser.add_argument("events", nargs="*", type=Path, metavar="EVENTS.fits",
                        help="FITS event file(s), one or more: EVENTS table, ENERGY [eV], sky X/Y with WCS or RA/DEC")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="(required) a directory written by `hpcmass export-model`")
    parser.add_argument("--center", metavar="RA,DEC",
                        help="cluster centre, degrees or sexagesimal (e.g. 30.0,45.0 or 02:00:00,+45:00:00); "
                             "default: the X-ray peak of each file")
    parser.add_argument("--redshift", type=float, metavar="Z",
                        help="the cluster's redshift, to flag a mismatch with the training redshift (not corrected)")
    parser.add_argument("--json", type=Path, metavar="PATH", dest="json_out", help="write the results as JSON")
    parser.add_argument("--csv", type=Path, metavar="PATH", dest="csv_out", help="write the results as CSV")


def parse_center(text: str | None) -> tuple[float, float] | None:
    """``RA,DEC`` in degrees, or sexagesimal hours/degrees, as (ra_deg, dec_deg)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ParamsError(f"--center {text!r}: expected RA,DEC")
    try:
        ra, dec = float(parts[0]), float(parts[1])
    except ValueError:
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        try:
            c = SkyCoord(parts[0], parts[1], unit=(u.hourangle, u.deg))
        except ValueError:
            raise ParamsError(f"--center {text!r}: expected RA,DEC in degrees or hh:mm:ss,dd:mm:ss") from None
        ra, dec = float(c.ra.deg), float(c.dec.deg)
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise ParamsError(f"--center {text!r}: expected 0 <= RA < 360 and -90 <= Dec <= 90 degrees")
    return ra, dec


def warnings_for(row: dict, bundle, redshift: float | None) -> list[str]:
    """Where this observation differs from what the models were trained and calibrated on."""
    img, train = bundle.image, bundle.manifest["training_set"]
    out = []
    exposure_ks = row["exposure_s"] / 1e3
    if exposure_ks <= 0:
        out.append("no EXPOSURE in the file: cannot check it against the training exposure")
    elif abs(exposure_ks / img["exposure_ks"] - 1) > EXPOSURE_TOLERANCE:
        out.append(f"exposure {exposure_ks:.4g} ks, trained on {img['exposure_ks']:.4g} ks: the models read raw "
                   f"counts, so the mass is biased (low for a shorter exposure)")
    if redshift is not None and not math.isclose(redshift, img["redshift"], rel_tol=0.02):
        out.append(f"redshift {redshift:g}, trained at {img['redshift']:g}: angular size and flux differ; "
                   f"not corrected")
    lo, hi = train["log_m500c_range"]
    if not lo <= row["log_m500c"] <= hi:
        out.append(f"log M500c {row['log_m500c']:.2f} is outside the training range {lo:.2f}-{hi:.2f}")
    if row["fold_spread_dex"] > row["half_width_dex"]:
        out.append(f"the fold models disagree by {row['fold_spread_dex']:.3f} dex, more than the interval's half-width "
                   f"{row['half_width_dex']:.3f}: the image is unlike the training set")
    return out


def predict_files(paths, bundle, center_radec=None, redshift: float | None = None) -> list[dict]:
    """One result row per event file: centre and its rule, counts, central value, interval, spreads, each
    fold model's mean and the warnings."""
    from .calibration import interval
    from .events import bin_event_file, check_instrument

    img = bundle.image
    for p in paths:
        check_instrument(p, bundle.instrument)
    binned = [bin_event_file(p, fov_arcmin=img["fov_arcmin"], pixels=img["pixels"], bands=img["bands_kev"],
                             center_radec=center_radec) for p in paths]
    pred = bundle.predict(np.stack([b.image for b in binned]))  # (files, models, 8)
    half_width = bundle.calibration.half_width
    rows = []
    for path, b, p in zip(paths, binned, pred):
        iv = interval(p, half_width)
        row = {"file": str(path), "center_ra_deg": b.center_radec[0], "center_dec_deg": b.center_radec[1],
               "center_rule": b.center_rule, "counts_in_image": int(b.image.sum()), "exposure_s": b.exposure_s,
               "log_m500c": iv.central, "lower": iv.lower, "upper": iv.upper, "half_width_dex": half_width,
               "m500c_msun": 10 ** iv.central, "view_spread_dex": iv.view_spread, "fold_spread_dex": iv.fold_spread,
               "per_fold_log_m500c": iv.per_fold}
        row["warnings"] = warnings_for(row, bundle, redshift)
        rows.append(row)
    return rows


def format_table(rows: list[dict], bundle) -> str:
    img, cal = bundle.image, bundle.calibration
    lines = [f"model: {bundle.path} ({len(bundle.manifest['models'])} fold models × 8 views; trained on "
             f"{bundle.manifest['provenance']['observe']['data_mode']} mocks at z={img['redshift']:g}, "
             f"{img['exposure_ks']:g} ks, {img['fov_arcmin']:g}' field in {img['pixels']} px of "
             f"{img['pixel_arcsec']:.4g}\", "
             f"{bands_label(img['bands_kev'])}, {bundle.instrument['name']})",
             cal.describe(),
             f"{'file':<32} {'centre RA, Dec [deg]':<22} {'rule':<10} {'counts':>8} {'log M500c':>9}  "
             f"{'68% interval':<15} {'M500c [Msun]':>12} {'views':>6} {'folds':>6}"]
    for r in rows:
        lines.append(f"{Path(r['file']).name:<32} {r['center_ra_deg']:9.5f} {r['center_dec_deg']:+9.5f}   "
                     f"{r['center_rule']:<10} {r['counts_in_image']:>8d} {r['log_m500c']:9.3f}  "
                     f"[{r['lower']:.3f}, {r['upper']:.3f}] {r['m500c_msun']:12.3e} {r['view_spread_dex']:6.3f} "
                     f"{r['fold_spread_dex']:6.3f}")
        lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("per_fold_log_m500c", "warnings")]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys + ["per_fold_log_m500c", "warnings"])
        for r in rows:
            w.writerow([r[k] for k in keys] + [" ".join(f"{v:.5f}" for v in r["per_fold_log_m500c"]),
                                               "; ".join(r["warnings"])])


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    from .bundle import load_bundle

    log = get_logger(comm)
    if not args.events or args.model is None:
        raise ParamsError("expected one or more EVENTS.fits files and --model DIR (a directory written by "
                          "`hpcmass export-model`)")
    bundle = load_bundle(args.model)
    center = parse_center(args.center)
    rows = predict_files(args.events, bundle, center, args.redshift)
    print(format_table(rows, bundle))
    results = {"model": str(bundle.path), "calibration": bundle.manifest["calibration"],
               "image": bundle.image, "instrument": bundle.instrument, "predictions": rows}
    for path, write in ((args.json_out, lambda p: p.write_text(json.dumps(results, indent=1) + "\n")),
                        (args.csv_out, lambda p: write_csv(p, rows))):
        if path is not None:
            try:
                write(path)
            except OSError as e:
                raise InputError(f"{path}: cannot write ({e.strerror})") from None
            log.info("wrote %s", path)
    return 0
