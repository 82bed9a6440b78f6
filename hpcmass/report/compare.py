"""Two runs of one sample side by side (``hpcmass compare RUN_A RUN_B``): does a change help the CNN?

A comparison means something only on the same clusters, folds and seeds, so the two runs must
share the catalogue (cluster ids and true masses, bit for bit), the folds and ``run.seed``;
anything else may differ (one energy band against three, another input scaling, ...) and is named
in the table. Each run's row is the report's fit of every view's residual (maximum-likelihood
Gaussian, 68% cluster-bootstrap interval, :mod:`.stats`) with the same bootstrap seed, so both
rows resample the same clusters. The difference of the two scatters is bootstrapped *paired* (each
resample takes the same clusters from both runs): the scatter the sample itself brings, common to
both, cancels, and the interval says whether the change helps on these clusters.

When both runs have an exported model in ``<workdir>/model`` (``hpcmass export-model``), each run's
models also read both runs' held-out images as ``hpcmass predict`` would (:mod:`hpcmass.predict.transfer`):
how far off models trained on one kind of mock are on the other, what predict's checks refuse, and
how many images the out-of-distribution score warns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..images import bands_label
from ..store import Store, git_commit, utc_now
from ..store.provenance import params_diff
from ..store.readers import load_catalog, load_folds, load_observations, load_predictions, stage_attrs
from .stats import bootstrap_clusters, gaussian_fit, scatter_percent

_NEEDS = ("catalog", "observe", "dataset", "train")


@dataclass(frozen=True)
class Run:
    """What a comparison reads of one workdir: its sample, folds, held-out predictions and params."""

    workdir: Path
    cluster_id: np.ndarray
    log_m500c: np.ndarray
    folds: np.ndarray
    pred: np.ndarray  # (clusters, views) test-fold predictions
    bands_kev: tuple[tuple[float, float], ...]
    seed: int
    identity: dict = field(repr=False)  # the params the train stage depends on (every section up to it)
    train_attrs: dict = field(repr=False)

    @property
    def delta(self) -> np.ndarray:
        return self.pred - self.log_m500c[:, None]


def read_run(workdir) -> Run:
    """A completed run up to the train stage; StageError naming the stage to run otherwise."""
    workdir = Path(workdir)
    with Store.read(workdir) as s:
        for stage in _NEEDS:
            s.require_complete(stage)
        cat, pred, train = load_catalog(s), load_predictions(s), stage_attrs(s, "train")
        bands = tuple(tuple(b) for b in stage_attrs(s, "observe")["bands_kev"])  # not the images themselves
        return Run(workdir, cat.cluster_id, cat.log_m500c, load_folds(s), pred.pred_log_m500c, bands,
                   int(train["seed"]), json.loads(train["params_identity"]), train)


def check_same_sample(a: Run, b: Run) -> None:
    """InputError (one line) unless the runs share clusters, masses, folds and seed."""
    where = f"{a.workdir} and {b.workdir}"
    if a.cluster_id.shape != b.cluster_id.shape or not np.array_equal(a.cluster_id, b.cluster_id):
        raise InputError(f"{where} hold other clusters ({a.cluster_id.size} and {b.cluster_id.size}); compare runs of "
                         f"one catalogue")
    if not np.array_equal(a.log_m500c, b.log_m500c):
        raise InputError(f"{where}: the same cluster ids with other true masses "
                         f"({params_diff(a.identity['catalog'], b.identity['catalog'], 'catalog.') or 'catalog'})")
    if not np.array_equal(a.folds, b.folds):
        raise InputError(f"{where}: other folds ({params_diff(a.identity['dataset'], b.identity['dataset'], 'dataset.')}"
                         f"); a comparison needs the same test clusters in each fold")
    if a.seed != b.seed:
        raise InputError(f"{where}: run.seed {a.seed} and {b.seed}; compare runs of one seed (the same initial "
                         f"weights and data order)")


def paired_scatter_difference(delta_a: np.ndarray, delta_b: np.ndarray, n_resamples: int, seed: int) -> dict:
    """sigma_b - sigma_a [dex] of residuals (clusters, views) of the same clusters, with the 68% interval of
    a paired cluster bootstrap."""
    rows = np.concatenate([delta_a, delta_b], axis=1)
    rows = rows[np.isfinite(rows).all(axis=1)]
    views = delta_a.shape[1]

    def difference(r):
        return np.array([np.std(r[:, views:]) - np.std(r[:, :views])])  # the Gaussian MLE sigma

    d = float(difference(rows)[0])
    err, lo, hi = bootstrap_clusters(rows, difference, n_resamples, seed)
    return {"sigma_difference": d, "sigma_difference_err": float(err[0]), "sigma_difference_lo": float(lo[0]),
            "sigma_difference_hi": float(hi[0]), "percent_difference": scatter_percent(d),
            "n_clusters": int(rows.shape[0])}


def transfers(a: Run, b: Run) -> dict:
    """Each run's exported models (``<workdir>/model``) on both runs' held-out images as predict treats them
    (:mod:`hpcmass.predict.transfer`): ``rows``, or why not (``skipped``)."""
    from ..predict.bundle import DEFAULT_DIR, MANIFEST, load_bundle
    from ..predict.transfer import through_model

    bundles = []
    for run in (a, b):
        path = run.workdir / DEFAULT_DIR
        again = f"run `hpcmass export-model --workdir {run.workdir}`"
        if not (path / MANIFEST).exists():
            return {"skipped": f"{path}: no exported model; {again}"}
        try:
            bundle = load_bundle(path)
        except InputError as e:  # another format, a file missing: it says what to do
            return {"skipped": str(e)}
        if bundle.manifest["provenance"]["train"]["params_hash"] != run.train_attrs["params_hash"]:
            return {"skipped": f"{path}: exported from another train stage than {run.workdir}'s; {again}"}
        if "ood" not in bundle.domain:
            return {"skipped": f"{path}: exported before the out-of-distribution score; {again}"}
        bundles.append(bundle)
    with Store.read(a.workdir) as sa, Store.read(b.workdir) as sb:
        observations = [load_observations(sa), load_observations(sb)]
    shapes = [o.counts.shape[2:] for o in observations]  # (bands, P, P)
    if shapes[0] != shapes[1]:
        return {"skipped": f"the runs' images differ in bands or pixels, {shapes[0]} against {shapes[1]} (bands, "
                           f"pixels, pixels): one run's models cannot read the other's"}
    rows = []
    for models_run, bundle in zip((a, b), bundles):
        for images_run, obs in zip((a, b), observations):
            view_ks = (np.full(obs.counts.shape[:2], obs.exposure_ks) if obs.view_exposure_ks is None
                       else obs.view_exposure_ks)
            rows.append({"models": str(models_run.workdir), "images": str(images_run.workdir),
                         **through_model(bundle, obs.counts, view_ks, a.folds, a.log_m500c, obs.exposure)})
    return {"rows": rows, "rule": "each image through predict's checks at its own exposure and, where the store has "
                                  "one, with its exposure map as predict --expmap reads one; predicted and scored by "
                                  "its test fold's model; interval ± the model's h at that exposure"}


def compare(workdir_a, workdir_b, n_resamples: int = 1000) -> dict:
    """The comparison of two runs (the rows, their paired difference and provenance) as plain values."""
    a, b = read_run(workdir_a), read_run(workdir_b)
    check_same_sample(a, b)
    from ..train.model import expected_parameters  # TensorFlow: imported once the runs are known to compare

    rows = []
    for run in (a, b):
        per_cluster = np.nanmean(run.delta, axis=1)
        rows.append({"workdir": str(run.workdir), "bands_kev": [list(x) for x in run.bands_kev],
                     "parameters": expected_parameters(len(run.bands_kev)),
                     "all": gaussian_fit(run.delta, n_resamples, a.seed).as_dict(),
                     "per_cluster": gaussian_fit(per_cluster, n_resamples, a.seed).as_dict(),
                     "train_params_hash": run.train_attrs["params_hash"],
                     "git_commit": run.train_attrs.get("git_commit", "")})
    return {
        "same": {"clusters": int(a.cluster_id.size), "folds": int(a.folds.max() + 1), "seed": a.seed,
                 "views": int(a.pred.shape[1])},
        "differences": params_diff(a.identity, b.identity) or "nothing (the same params)",
        "runs": rows,
        "paired": paired_scatter_difference(a.delta, b.delta, n_resamples, a.seed),
        "bootstrap": {"resamples": n_resamples, "seed": a.seed, "unit": "cluster (a cluster's views together)"},
        "transfer": transfers(a, b),
        "provenance": {"hpcmass_version": __version__, "git_commit": git_commit(), "utc": utc_now()},
    }


def _fit(d: dict, key: str = "sigma") -> str:
    fmt = "{:+.4f}" if key == "mu" else "{:.4f}"
    return f"{fmt.format(d[key])} [{fmt.format(d[key + '_lo'])}, {fmt.format(d[key + '_hi'])}]"


def format_markdown(result: dict) -> str:
    """The comparison as a Markdown table, with what is shared and what differs."""
    same, p = result["same"], result["paired"]
    lines = [f"Same {same['clusters']} clusters, {same['folds']} folds, run.seed {same['seed']}; "
             f"the runs differ in: {result['differences']}.", "",
             "| run | energy bands | parameters | CNN σ [dex] | scatter | μ [dex] | per-cluster σ [dex] |",
             "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        fit = r["all"]
        lines.append(f"| {r['workdir']} | {bands_label(r['bands_kev'])} | {r['parameters']:,} | {_fit(fit)} | "
                     f"{fit['percent']:.1f}% [{scatter_percent(fit['sigma_lo']):.1f}, "
                     f"{scatter_percent(fit['sigma_hi']):.1f}] | {_fit(fit, 'mu')} | {_fit(r['per_cluster'])} |")
    lines += ["", f"σ(second) − σ(first) = {p['sigma_difference']:+.4f} [{p['sigma_difference_lo']:+.4f}, "
                  f"{p['sigma_difference_hi']:+.4f}] dex ({p['percent_difference']:+.2f} points of scatter): paired "
                  f"cluster bootstrap, {result['bootstrap']['resamples']} resamples, 68% interval."]
    return "\n".join(lines + _transfer_lines(result["transfer"]))


def _dex(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _transfer_lines(transfer: dict) -> list[str]:
    if "skipped" in transfer:
        return ["", f"Each run's models on the other's images: not compared; {transfer['skipped']}."]
    lines = ["", f"Each run's exported models on both runs' held-out images ({transfer['rule']}):", "",
             "| models → images | median δ [dex] | rms δ [dex] | inside ± h | refused (by check) "
             "| accepted: median δ, inside ± h | out of distribution: warned, rms δ warned / not |",
             "|---|---|---|---|---|---|---|"]
    for r in transfer["rows"]:
        every, ok = r["all"], r["accepted"]
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "none"
        inside = "–" if ok["inside"] is None else f"{100 * ok['inside']:.1f}%"
        median = "–" if ok["median_delta"] is None else f"{ok['median_delta']:+.3f}"
        lines.append(f"| {r['models']} → {r['images']} | {every['median_delta']:+.3f} | {every['rms_delta']:.3f} | "
                     f"{100 * every['inside']:.1f}% | {every['n_images'] - ok['n_images']}/{every['n_images']} "
                     f"({refused}) | {median}, {inside} ({ok['n_images']}) | "
                     f"{every['ood_warned']}/{every['n_images']}, {_dex(every['rms_delta_ood_warned'])} / "
                     f"{_dex(every['rms_delta_ood_not_warned'])} |")
    return lines
