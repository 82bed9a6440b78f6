"""What the interpretation shows, beside what the same procedure shows for models that know no masses.

Every number is a median over clusters (a cluster's views summarised first: they are not
independent) with a 68% cluster-bootstrap interval; comparisons between the trained CNN and a
null are paired on the same clusters. Two questions, two answers:

- *Gradients*: is the trained CNN's core response (|Delta N|/N in the core over that in the
  outskirts, :func:`hpcmass.interpret.dream.core_response`) lower than the nulls'? If not, the
  "ignored core" of the DeepDream profile is the procedure's, not the network's.
- *Occlusion*: how far does the predicted mass move when the core, or the outskirts, is replaced
  by an average cluster's, beyond the noise floor of refilling it with its own profile? Measured
  without gradients.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from ..images import radius_r500c
from ..interpret.nulls import LABELS
from .stats import median_interval


def _per_cluster(values: np.ndarray, fn=np.nanmedian) -> np.ndarray:
    """One value per cluster from (clusters, views) values, NaN where a cluster has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN clusters stay NaN
        return fn(values, axis=1)


def explainer_names(attrs: dict) -> list[str]:
    """The explainers of the interpret stage's core_response axis: the trained CNN, then its nulls."""
    return ["cnn", *str(attrs["nulls"]).split(",")]


def core_responses(interpret: dict, attrs: dict) -> dict[str, np.ndarray]:
    """Explainer -> each cluster's core response (the median over its views)."""
    response = np.asarray(interpret["core_response"], dtype=np.float64)  # (clusters, explainers, views)
    return {name: _per_cluster(response[:, k]) for k, name in enumerate(explainer_names(attrs))}


def last_profiles(interpret: dict, attrs: dict) -> dict[str, np.ndarray]:
    """Explainer -> median Delta N / N over every view after the last iteration, per radial bin."""
    stacked = [interpret["profile"][:, :, -1], *np.moveaxis(interpret["null_profile"][:, :, :, -1], 1, 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no view reaches stay NaN
        return {name: np.nanmedian(np.asarray(p, dtype=np.float64).reshape(-1, p.shape[-1]), axis=0)
                for name, p in zip(explainer_names(attrs), stacked)}


def occlusion_shifts(interpret: dict, attrs: dict) -> dict[str, dict[str, np.ndarray]]:
    """Region name -> fill -> (clusters, views) Delta log M of occluding it."""
    dlogm = np.asarray(interpret["occlusion_dlogm"], dtype=np.float64)  # (clusters, views, regions, fills)
    fills = str(attrs["occlusion_fills"]).split(",")
    return {name: {fill: dlogm[:, :, r, f] for f, fill in enumerate(fills)}
            for r, name in enumerate(json.loads(attrs["regions_r500c"]))}


def region_shares(projections: np.ndarray, r500c_kpc: np.ndarray, pixel_kpc: float,
                  regions_r500c: dict) -> dict[str, dict]:
    """How big each region is in the images: the median over clusters of its pixels and of its share
    of the image's counts (so that a reader can weigh the regions' Delta log M)."""
    out = {}
    p = projections.shape[-1]
    for name, (lo, hi) in regions_r500c.items():
        pixels, share = [], []
        for image, r500 in zip(projections, r500c_kpc):
            r = radius_r500c(p, pixel_kpc, r500)
            inside = (r >= lo) & (r < hi)
            pixels.append(inside.sum())
            share.append(image[:, inside].sum() / max(image.sum(), 1))
        out[name] = {"pixels": float(np.median(pixels)), "counts_share": float(np.median(share))}
    return out


def nulls_summary(responses: dict[str, np.ndarray], profiles: dict[str, np.ndarray], n_resamples: int,
                  seed: int) -> dict:
    """Per explainer: the median core response with its interval and the median last-iteration profile;
    for each null, the paired difference trained CNN - null with its interval."""
    out = {"explainers": {}, "paired_cnn_minus_null": {}}
    for name, per_cluster in responses.items():
        out["explainers"][name] = {"label": LABELS[name],
                                   "core_response": median_interval(per_cluster, n_resamples, seed).as_dict(),
                                   "profile_median_last_iteration": profiles[name].tolist()}
        if name != "cnn":
            out["paired_cnn_minus_null"][name] = median_interval(responses["cnn"] - per_cluster, n_resamples,
                                                                 seed).as_dict()
    return out


def occlusion_summary(shifts: dict[str, dict[str, np.ndarray]], regions_r500c: dict, shares: dict,
                      n_resamples: int, seed: int) -> dict:
    """Per occluded region and fill: the median over clusters of the mean Delta log M of their views and of
    the mean |Delta log M|, with intervals. Per region, the excess of the fold-mean fill over the noise
    floor (own-profile fill), paired on clusters; and the outskirts' excess minus the core's."""
    out = {"regions": {}}
    excess = {}
    for name, by_fill in shifts.items():
        size = {fill: _per_cluster(np.abs(d), np.nanmean) for fill, d in by_fill.items()}
        excess[name] = size["fold_mean"] - size["own_profile"]
        out["regions"][name] = {
            "r500c": list(regions_r500c[name]), **shares[name],
            "fills": {fill: {"dlogm": median_interval(_per_cluster(d, np.nanmean), n_resamples, seed).as_dict(),
                             "abs_dlogm": median_interval(size[fill], n_resamples, seed).as_dict(),
                             "rms_dlogm_views": float(np.sqrt(np.nanmean(d**2)))}
                      for fill, d in by_fill.items()},
            "abs_excess_over_floor": median_interval(excess[name], n_resamples, seed).as_dict(),
        }
    if {"core", "outskirts"} <= excess.keys():
        out["paired_excess_outskirts_minus_core"] = median_interval(excess["outskirts"] - excess["core"],
                                                                    n_resamples, seed).as_dict()
    return out


def _iv(d: dict, fmt: str = "{:.3f}") -> str:
    if not np.isfinite(d["lo"]):
        return fmt.format(d["median"])
    return f"{fmt.format(d['median'])} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]"


def verdict(nulls: dict, occlusion: dict, core_r500c: float) -> list[str]:
    """Two sentences with numbers: the gradient picture against its nulls, and occlusion."""
    ex, paired = nulls["explainers"], nulls["paired_cnn_minus_null"]
    below = [n for n, d in paired.items() if d["hi"] < 0]
    not_below = [n for n in paired if n not in below]
    responses = "; ".join(f"{d['label']} {_iv(d['core_response'])}" for d in ex.values())
    if not not_below:
        claim = "The trained CNN's core response is below every null's (paired intervals exclude 0)"
    elif below:
        claim = (f"The trained CNN's core response is below that of {', '.join(LABELS[n] for n in below)} but not "
                 f"of {', '.join(LABELS[n] for n in not_below)}: that much of the 'ignored core' the procedure "
                 f"makes by itself")
    else:
        claim = ("The trained CNN's core response is not below the nulls': the 'ignored core' of the gradient "
                 "picture is the procedure's, not evidence about the network")
    lines = [f"Gradients: core (< {core_r500c:g} R500c) response relative to the outskirts, median over clusters "
             f"[68% interval]: {responses}. {claim}."]
    reg = occlusion["regions"]
    if {"core", "outskirts"} <= reg.keys():
        parts = []
        for name in ("core", "outskirts"):
            fills = reg[name]["fills"]
            parts.append(f"{name} ({100 * reg[name]['counts_share']:.0f}% of the counts) mean |Δ log M| "
                         f"{_iv(fills['fold_mean']['abs_dlogm'])} dex (noise floor {_iv(fills['own_profile']['abs_dlogm'])}; "
                         f"excess {_iv(reg[name]['abs_excess_over_floor'], '{:+.3f}')})")
        diff = occlusion["paired_excess_outskirts_minus_core"]
        if diff["lo"] > 0:
            use = "less than the outskirts'"
        elif diff["hi"] < 0:
            use = "more than the outskirts'"
        else:
            use = "as much as the outskirts' (the interval includes 0)"
        lines.append(f"Occlusion by an average cluster: {'; '.join(parts)}. Beyond the noise floor, the core's "
                     f"content moves the predicted mass {use}: paired difference outskirts − core "
                     f"{_iv(diff, '{:+.3f}')} dex.")
    return lines


def interpretation_summary(data, params) -> dict:
    """Numbers behind Figures 6 and 7 (``data``: :class:`hpcmass.report.build.RunData`): where the CNN
    adds photons, how far the mass moved, the nulls, occlusion and the verdict."""
    edges = np.asarray(data.interpret_attrs["radial_edges_r500c"])
    r = 0.5 * (edges[1:] + edges[:-1])
    med = data.interpret["profile_median"]
    rp, ip = params.report, params.interpret
    inner, ring = r < ip.core_r500c, (r >= 0.2) & (r <= 1.0)
    dream_pred = data.interpret["pred_dream"]
    interp, attrs = data.interpret, data.interpret_attrs
    nulls = nulls_summary(core_responses(interp, attrs), last_profiles(interp, attrs), rp.bootstrap_resamples,
                          params.run.seed)
    regions_r500c = json.loads(attrs["regions_r500c"])
    shares = region_shares(data.projections, data.r500c_kpc, float(attrs["pixel_kpc"]), regions_r500c)
    occlusion = occlusion_summary(occlusion_shifts(interp, attrs), regions_r500c, shares, rp.bootstrap_resamples,
                                  params.run.seed)
    return {
        "median_dn_over_n_core": [float(np.nanmean(m[inner])) if inner.any() else None for m in med],
        "median_dn_over_n_0p2_1": [float(np.nanmean(m[ring])) if np.isfinite(m[ring]).any() else None for m in med],
        "mean_dlogm_per_iteration": np.nanmean(np.diff(dream_pred, axis=-1), axis=(0, 1)).tolist(),
        "off_centre_views": int(data.interpret["off_centre"].sum()),
        "off_centre_clusters": int((data.interpret["off_centre"].sum(axis=1) > data.interpret["off_centre"].shape[1] / 2).sum()),
        "views": int(data.interpret["off_centre"].size),
        "offcentre_threshold_r500c": ip.offcentre_r500c,
        "core_r500c": ip.core_r500c,
        "outskirts_r500c": list(ip.outskirts_r500c),
        "nulls": nulls,
        "occlusion": occlusion,
        "verdict": verdict(nulls, occlusion, ip.core_r500c),
    }
