"""``hpcmass predict EVENTS.fits... --model DIR``: log10 M500c of observed clusters, with a calibrated interval.

Each event file is checked and binned exactly as the training images (the model directory's field,
pixels and energy bands; :mod:`hpcmass.predict.events`), centred on ``--center`` or the X-ray peak; every
fold model predicts the image's 8 views, and the interval is the one calibrated on the held-out
predictions (:mod:`hpcmass.predict.calibration`). Runs on one process (rank 0 of a job).

Before the models see it, each image passes the domain checks (:mod:`hpcmass.predict.checks`, thresholds
measured at export: :mod:`hpcmass.predict.domain`), each a verdict ``ok``/``warn``/``refuse`` in the
table, JSON and CSV: exposure (a longer one thinned to the training exposure, a shorter one's interval
widened as calibrated, below the calibrated range refused; for models trained on a range of exposures,
the counts scaled to their reference exposure as the training images were), field coverage, extended emission
(no cluster detected: refused; with the observation's exposure map, ``--expmap``, coverage is the cells it
exposes and surface brightness is corrected for the exposure) and, a warning only, how unlike the training
images the network finds it (its penultimate features against the training images'). A refused file gets no
mass.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError, ParamsError
from ..images import at_exposure, bands_label
from ..mpi import get_logger
from ..params import SIMPLE_ACISI
from . import checks

HELP = "predict log10 M500c, with a calibrated interval, of clusters in X-ray event files (an exported model)"
#: Seed of the thinning of an exposure longer than the training one (the same file gives the same image).
THIN_SEED = 0


def add_arguments(parser) -> None:
    # Checked in run(), not by argparse: every subcommand parses with the common options alone.
    parser.add_argument("events", nargs="*", type=Path, metavar="EVENTS.fits",
                        help="FITS event file(s), one or more: EVENTS table, ENERGY [eV], sky X/Y with WCS or RA/DEC")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="(required) a directory written by `hpcmass export-model`")
    parser.add_argument("--center", metavar="RA,DEC",
                        help="cluster centre, degrees or sexagesimal (e.g. 30.0,45.0 or 02:00:00,+45:00:00); "
                             "default: the X-ray peak of each file")
    parser.add_argument("--expmap", nargs="+", type=Path, metavar="MAP.fits",
                        help="the observations' exposure maps (a FITS image with an RA/Dec WCS, as CIAO's fluximage "
                             "writes it), one per event file in the same order: field coverage is then the cells "
                             "exposed, and the cluster check corrects surface brightness for the exposure "
                             "(chip gaps, dithered edges)")
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


def unmodelled(instrume: str, bundle) -> list[str]:
    """What a real observation (INSTRUME not the models' SOXS mock instrument) has that the training mocks lacked.
    Models exported before these options existed were trained without them."""
    if instrume.upper() == bundle.manifest["provenance"]["observe"]["instrument"].get("name", "").upper():
        return []
    out = []
    if bundle.instrument["name"] == SIMPLE_ACISI and bundle.instrument["chips"] == 1:
        out.append("the models were trained on one square chip filling the field (observe.chips=none): this "
                   "observation's chip gaps and off-chip corners read as missing emission; not corrected")
    if not bundle.image["point_sources"]:
        out.append("the models were trained without point sources (observe.point_sources=false): those in the field "
                   "add to the cluster's counts; not masked")
    return out


def warnings_for(row: dict, bundle, redshift: float | None, instrume: str) -> list[str]:
    """Where a predicted observation differs from what the models were trained on, beyond the domain checks."""
    img, train = bundle.image, bundle.manifest["training_set"]
    out = unmodelled(instrume, bundle)
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


#: The estimate's columns, empty (None) in a refused row.
ESTIMATE = ("log_m500c", "lower", "upper", "m500c_msun", "view_spread_dex", "fold_spread_dex")


def checked_image(binned, domain: dict) -> tuple[np.ndarray, np.ndarray, list, float]:
    """The counts checked (thinned to the longest training exposure when longer), the image the models see (those
    counts, scaled to the reference exposure for models trained on a range of them), the domain checks' verdicts
    and the interval's half-width. With the observation's exposure map (``binned.exposure``), field coverage is
    the cells it exposes and the cluster check is exposure-corrected, when the model calibrated that statistic."""
    exposure = checks.exposure_verdict(binned.exposure_s, domain)
    counts = (binned.image if exposure.keep == 1.0 else
              checks.thin(binned.image, exposure.keep, np.random.default_rng(THIN_SEED)))
    image = (counts if exposure.scale_from_ks is None else
             at_exposure(counts, exposure.scale_from_ks, domain["exposure"]["training_ks"]))
    ap = checks.apertures(counts.shape[-1])
    exposed = binned.exposure is not None and checks.detection_for(domain, True) is not None
    expmap = binned.exposure if exposed else None
    verdicts = [exposure.verdict, checks.coverage_verdict(checks.field_coverage(counts, expmap), domain, exposed),
                checks.cluster_verdict(checks.extended_significance(counts, ap, expmap),
                                       checks.detection_for(domain, exposed), exposed)]
    return counts, image, verdicts, exposure.half_width


def predict_files(paths, bundle, center_radec=None, redshift: float | None = None, expmaps=None) -> list[dict]:
    """One result row per event file: centre and its rule, counts, the domain checks' verdicts, and unless refused
    the central value, interval, spreads, each fold model's mean and the warnings. ``expmaps``: each file's
    exposure map (None: none)."""
    from .calibration import interval
    from .events import bin_event_file, check_instrument

    img = bundle.image
    instrume = [check_instrument(p, bundle.instrument) for p in paths]
    expmaps = [None] * len(paths) if expmaps is None else expmaps
    if len(expmaps) != len(paths):
        raise ParamsError(f"--expmap: {len(expmaps)} exposure map(s) for {len(paths)} event file(s); give one per "
                          f"event file, in the same order")
    rows, images, verdicts_of = [], [], []
    for path, expmap in zip(paths, expmaps):
        b = bin_event_file(path, fov_arcmin=img["fov_arcmin"], pixels=img["pixels"], bands=img["bands_kev"],
                           center_radec=center_radec, expmap=expmap)
        counts, image, verdicts, half_width = checked_image(b, bundle.domain)
        rows.append({"file": str(path), "center_ra_deg": b.center_radec[0], "center_dec_deg": b.center_radec[1],
                     "center_rule": b.center_rule, "counts_in_image": int(counts.sum()), "exposure_s": b.exposure_s,
                     "exposure_map": None if expmap is None else str(expmap),
                     "verdict": None, "checks": None, "half_width_dex": half_width, **dict.fromkeys(ESTIMATE),
                     "per_fold_log_m500c": [], "warnings": []})
        images.append(image)
        verdicts_of.append(verdicts)
    # Every image is scored, a refused one too: how unlike the training images it is says something of it.
    pred, scores = bundle.predict(np.stack(images))  # (files, models, 8), (files,)
    reference = bundle.feature_reference
    for i, row in enumerate(rows):
        verdicts = verdicts_of[i] + [checks.ood_verdict(None if scores is None else float(scores[i]), bundle.domain,
                                                        None if reference is None else reference["heldout_scores"])]
        row.update(verdict=checks.worst(verdicts), checks={v.check: v.as_dict() for v in verdicts})
        if row["verdict"] != "refuse":
            iv = interval(pred[i], row["half_width_dex"])
            row.update(log_m500c=iv.central, lower=iv.lower, upper=iv.upper, m500c_msun=10 ** iv.central,
                       view_spread_dex=iv.view_spread, fold_spread_dex=iv.fold_spread, per_fold_log_m500c=iv.per_fold)
            row["warnings"] = warnings_for(row, bundle, redshift, instrume[i])
            if expmaps[i] is not None and checks.detection_for(bundle.domain, True) is None:
                row["warnings"].append("the exposure map is not used: the model was exported before the checks were "
                                       "calibrated with exposure maps; export it again with `hpcmass export-model`")
    return rows


def _reasons(row: dict, verdict: str) -> list[str]:
    return [f"{name}: {c['reason']}" for name, c in row["checks"].items() if c["verdict"] == verdict]


def _exposure(image: dict) -> str:
    span = image.get("exposure_range_ks")  # absent from models exported before ranges existed
    if span is None:
        return f"{image['exposure_ks']:g} ks"
    return f"{span[0]:g}-{span[1]:g} ks scaled to {image['exposure_ks']:g}"


def format_table(rows: list[dict], bundle) -> str:
    img, cal = bundle.image, bundle.calibration
    lines = [f"model: {bundle.path} ({len(bundle.manifest['models'])} fold models × 8 views; trained on "
             f"{bundle.manifest['provenance']['observe']['data_mode']} mocks at z={img['redshift']:g}, "
             f"{_exposure(img)}, {img['fov_arcmin']:g}' field in {img['pixels']} px of "
             f"{img['pixel_arcsec']:.4g}\", "
             f"{bands_label(img['bands_kev'])}, {bundle.instrument['name']})",
             cal.describe(),
             f"{'file':<32} {'centre RA, Dec [deg]':<22} {'rule':<10} {'counts':>8} {'verdict':<7} {'log M500c':>9}  "
             f"{'68% interval':<15} {'M500c [Msun]':>12} {'views':>6} {'folds':>6}"]
    for r in rows:
        head = (f"{Path(r['file']).name:<32} {r['center_ra_deg']:9.5f} {r['center_dec_deg']:+9.5f}   "
                f"{r['center_rule']:<10} {r['counts_in_image']:>8d} {r['verdict']:<7}")
        if r["verdict"] == "refuse":
            lines.append(f"{head} {'-':>9}")
            lines += [f"  refused: {why}" for why in _reasons(r, "refuse")]
        else:
            lines.append(f"{head} {r['log_m500c']:9.3f}  [{r['lower']:.3f}, {r['upper']:.3f}] {r['m500c_msun']:12.3e} "
                         f"{r['view_spread_dex']:6.3f} {r['fold_spread_dex']:6.3f}")
        lines += [f"  warning: {w}" for w in _reasons(r, "warn") + r["warnings"]]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("checks", "per_fold_log_m500c", "warnings")]
    names = list(rows[0]["checks"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys + [f"{n}_{part}" for n in names for part in ("verdict", "value")]
                   + ["per_fold_log_m500c", "reasons", "warnings"])
        for r in rows:
            w.writerow(["" if r[k] is None else r[k] for k in keys]
                       + [("" if r["checks"][n][part] is None else r["checks"][n][part])
                          for n in names for part in ("verdict", "value")]
                       + [" ".join(f"{v:.5f}" for v in r["per_fold_log_m500c"]),
                          "; ".join(_reasons(r, "refuse") + _reasons(r, "warn")), "; ".join(r["warnings"])])


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
    rows = predict_files(args.events, bundle, center, args.redshift, args.expmap)
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
