"""The report page: this run's numbers beside the paper's, the figures, the L_X method, provenance."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np

from ..images import bands_label


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.92em;color:#444}
.warn{background:#fff4e0;border:1px solid #e5b567;padding:.5em .8em;border-radius:4px}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em} .muted{color:#777}
.verdict{background:#eef5ff;border-left:4px solid #4a7fc1;padding:.5em .8em}
"""


def _background(notes: dict) -> str:
    """Where the L_X background level came from, in words."""
    sky = notes["sky_fields"]
    if sky is None:
        return (f"the particle background the observe stage used ({escape(str(notes['background_file']))}, "
                f"{notes['background_rate_arcmin2']:.3g} counts s<sup>−1</sup> arcmin<sup>−2</sup> in the band)")
    return (f"the mean of {sky['n']} blank-sky mocks through the observe stage’s instrument and backgrounds "
            f"(± {sky['standard_error']:.3f}), as an observer takes it from blank-sky files: particle background"
            f"{', point sources' if notes['point_sources'] else ''}{', galactic foreground' if notes['foreground'] else ''}"
            f"; the point sources are masked neither there nor in the cluster fields")


def _exposure(observe) -> str:
    """The mocks' exposure in words."""
    if observe.exposure_range_ks is None:
        return f"{observe.exposure_ks:g} ks"
    lo, hi = observe.exposure_range_ks
    return f"{lo:g}–{hi:g} ks, each projection’s own (log-uniform)"


def _f(x, fmt="{:.3f}") -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _fit(d: dict, key: str = "sigma") -> str:
    """A fitted sigma or mu with its 68% bootstrap interval (and sigma in percent)."""
    fmt = "{:+.3f}" if key == "mu" else "{:.3f}"
    lo, hi = d.get(f"{key}_lo", np.nan), d.get(f"{key}_hi", np.nan)
    interval = f" [{_f(lo, fmt)}, {_f(hi, fmt)}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    extra = f" ({_f(d['percent'], '{:.1f}')}%)" if key == "sigma" else ""
    return f"{_f(d[key], fmt)}{interval}{extra}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f"<th{' class=l' if i < left else ''}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i < left else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _sub(text: str) -> str:
    return escape(text).replace("R500c", "R<sub>500c</sub>").replace("L_X", "L<sub>X</sub>")


def _lx_paper(s: dict, v: dict) -> str:
    """The paper's scatter for an aperture variant (either reading of its aperture error), else a dash."""
    ref = s["paper"]["lx_percent"].get(f"{v['error']:g}") if v["moves"] in ("outer", "whole") else None
    return "—" if ref is None else f"{ref:.1f}%"


def soft_band_note(bands) -> str:
    """What the approximate thermal table does to a soft (below 1.2 keV) image channel, as measured."""
    from ..observe.approx import SOFT_BAND_SHARE_OF_APEC as share

    if len(bands) < 2 or bands[0][1] > 1.2:
        return ""
    return (" The approximate spectra's colours are weaker than real: against real AtomDB APEC they have "
            + ", ".join(f"{100 * v:.0f}%" for v in share.values()) + " of the 0.5–1.2 keV counts at kT = "
            + ", ".join(f"{k:g}" for k in share) + " keV (no Fe-L lines; benchmarks/approx_vs_apec.py), so the "
            f"soft channel ({bands[0][0]:g}–{bands[0][1]:g} keV) of groups is underpopulated.")


def _headline(s: dict, params) -> str:
    cnn, paper = s["cnn"], s["paper"]
    lo, hi = params.report.subset_log_m500c
    best = cnn["best"]
    rows = [
        ["CNN, all folds: σ [dex]", f"{paper['sigma']:.3f} ({paper['sigma_percent']:.1f}%)", _fit(cnn["all"])],
        ["CNN, all folds: μ [dex]", f"{paper['mu']:+.3f}", _fit(cnn["all"], "mu")],
        ["CNN, best fold: σ [dex]", f"{paper['best_sigma']:.3f} ({paper['best_percent']:.1f}%)",
         f"{_fit(best)} — fold {cnn['best_fold']}"],
        ["CNN, best fold: μ [dex]", f"{paper['best_mu']:+.3f}", _fit(best, "mu")],
        [f"CNN, {lo:g} &lt; log M<sub>500c</sub> &lt; {hi:g}: σ [dex]",
         f"{paper['subset_sigma']:.3f} ({paper['subset_percent']:.1f}%)",
         f"{_fit(cnn['subset'])}, {cnn['subset']['n_clusters']} clusters"],
        [f"CNN, {lo:g}–{hi:g}: μ [dex]", f"{paper['subset_mu']:+.3f}", _fit(cnn["subset"], "mu")],
        [f"CNN, best fold, {lo:g}–{hi:g}: σ [dex]",
         f"{paper['best_subset_sigma']:.3f} ({paper['best_subset_percent']:.1f}%)",
         f"{_fit(cnn['best_subset'])}, {cnn['best_subset']['n_clusters']} clusters"],
        ["CNN, per-cluster mean of the views: σ [dex]", "—", _fit(cnn["per_cluster"])],
        ["pull toward the mean: d δ / d log M<sub>true</sub>", "negative (Fig. 3)",
         f"{cnn['bias']['slope']:+.3f} ± {cnn['bias']['slope_err']:.3f}"],
    ]
    rows += [[f"core-excised L<sub>X</sub> (images), {_sub(v['label'])}: σ [dex]", _lx_paper(s, v), _fit(v["all"])]
             for v in s["lx_image"].values()]
    rows += [[f"oracle (gas cells, 3D, true R<sub>500c</sub>): {escape(o['label'])}: σ [dex]",
              "5–7% (Kravtsov+06)" if key == "yx" else "—", _fit(o["all"])] for key, o in s["oracles"].items()]
    return _table(["quantity", "paper", "this run"], rows)


def _folds(s: dict) -> str:
    cnn = s["cnn"]["per_fold"]
    rows = []
    for k in sorted(cnn, key=int):
        lx = s["lx_image"]["exact"]["per_fold"].get(k)
        t = s["training"]["folds"][int(k)]
        rows.append([str(k), str(cnn[k]["n_clusters"]), _fit(cnn[k]), _fit(cnn[k], "mu"),
                     f"{t['epoch_kept']} of {t['epochs_trained']}", "yes" if t["criteria_met"] else "no",
                     f"{t['val_loss_kept_over_best']:.2f}", escape(t["reason"]), _fit(lx) if lx else "—"])
    return _table(["fold", "test clusters", "CNN σ [dex]", "CNN μ [dex]", "epoch kept", "paper's criteria met",
                   "val. loss kept / lowest", "why it stopped", "L<sub>X</sub> σ (exact aperture)"], rows)


def _training(t: dict) -> str:
    if t["stopping"] == "paper":
        rule = ("the paper’s: each fold stopped at the first epoch whose validation fold met its criteria "
                f"(max|δ| &lt; 0.3, |median δ| &lt; 0.02, slope &gt; 0.9), else at epoch {t['max_epochs']}")
    else:
        rule = ("plateau: the paper’s criteria on the validation fold (max|δ| &lt; 0.3, |median δ| &lt; 0.02, "
                "slope &gt; 0.9) are necessary: a fold stopped only after they had held, then "
                f"{t['patience']} epochs after its lowest validation loss (or at epoch {t['max_epochs']}), and "
                "kept that epoch’s model. The paper’s rule (<code>train.stopping: paper</code>) stops our folds "
                "at epoch 2–15, on an early, noisy epoch (README, “When a fold stops”)")
    return (f"<p>Stopping rule ({escape(t['stopping'])}): {rule}. The output bias started at "
            f"{'the training mean of log M' if t['output_bias'] == 'mean' else '0'}.</p>")


def _aperture_effect(s: dict) -> str:
    """Which reading of the paper's "outer aperture with an error with R500" its numbers imply: the
    scatter each percent of R500c error adds in quadrature, the paper's against each reading here."""
    g = s["lx_aperture_growth"]
    paper = g["paper"]
    text = (f"The paper’s 14.6% and 22.2% at 3% and 5% imply that each percent of R<sub>500c</sub> error adds "
            f"{paper['k']:.1f}% of scatter in quadrature (to {paper['s0_percent']:.1f}% without error).")
    readings = {m: g[m] for m in ("outer", "whole") if m in g}
    if not readings:
        return text
    names = {"outer": "on the outer radius alone", "whole": "on the whole aperture (both radii)"}
    e_s, e_l = next(iter(readings.values()))["errors_percent"]
    here = "; ".join(f"{names[m]} {r['k']:.1f} [{r['k_lo']:.1f}, {r['k_hi']:.1f}]" for m, r in readings.items())
    moved = " and ".join(f"{r['median_abs_dln_lx_percent']:.1f}% ({m})" for m, r in readings.items())
    within = [m for m, r in readings.items() if r["k_lo"] <= paper["k"] <= r["k_hi"]]
    if within:
        verdict = ("The paper’s growth is inside the interval with the error "
                   f"{' and '.join(names[m] for m in within)}.")
    elif all(r["k_hi"] < paper["k"] for r in readings.values()):
        verdict = (f"Neither reading reproduces it: a {e_l:g}% error moves a projection’s L<sub>X</sub> by a median "
                   f"{moved}, too little to widen the scatter that much. The paper does not say how its error "
                   f"entered; its growth needs more than the aperture’s placement.")
    else:
        closest = min(readings, key=lambda m: abs(readings[m]["k"] - paper["k"]))
        verdict = f"The paper’s growth lies outside both intervals, nearest to the error {names[closest]}."
    return f"{text} Here, between {e_s:g}% and {e_l:g}% (68% intervals): {here}. {verdict}"


def _oracles(s: dict) -> str:
    if not s["oracles"]:
        return ("<p>The catalog source measures nothing on gas cells (e.g. toy test clusters), so there are no "
                "oracle rows.</p>")
    return ("<p>Quantities the catalog stage measured on the gas cells in 3D within the <i>true</i> "
            "R<sub>500c</sub> (no projection, photons or background), through the same cross-validated power law "
            "as L<sub>X</sub>: the scatter at fixed mass that the simulated sample itself allows. An image-based "
            "estimator that beats M<sub>gas</sub> or Y<sub>X</sub> by much would be learning something the sample "
            "should not give away. For reference: the paper quotes 5–7% for Y<sub>X</sub> (Kravtsov, Vikhlinin "
            "&amp; Nagai 2006); TNG’s gas mass at fixed M<sub>500c</sub> scatters by about 5% above 10<sup>14</sup> "
            "M<sub>☉</sub> (Aljamal et al. 2025), more in groups, where feedback empties haloes unevenly (Farahi et "
            "al. 2018).</p>"
            + _table(["oracle (3D, true R<sub>500c</sub>)", "σ all [dex]", "μ all [dex]",
                      f"best fold ({s['cnn']['best_fold']}) σ"],
                     [[escape(o["label"]), _fit(o["all"]), _fit(o["all"], "mu"), _fit(o["best"])]
                      for o in s["oracles"].values()]))


def _nulls_text(it: dict) -> str:
    names = {"untrained": "the fold’s CNN with the weights its training started from",
             "sum_log1p": "f = Σ log(1+N) (the input scaling alone)",
             "log_sum": "f = log<sub>10</sub> Σ N (every pixel’s gradient equal: the procedure’s own profile)"}
    return "; ".join(names[n] for n in it["nulls"]["paired_cnn_minus_null"])


def _figure(name: str, caption: str) -> str:
    return f'<figure><img src="{escape(name)}" alt="{escape(caption[:80])}"><figcaption>{caption}</figcaption></figure>'


def _provenance(data, prov_self: dict) -> str:
    rows = []
    for stage, a in list(data.provenance.items()) + [("report", prov_self)]:
        rows.append([stage, escape(str(a.get("params_hash", ""))), escape(str(a.get("last_run_git_commit",
                                                                                      a.get("git_commit", "")))),
                     escape(str(a.get("created_utc", ""))), escape(str(a.get("last_run_utc", ""))),
                     str(a.get("last_run_ranks", "")), str(a.get("n_runs", ""))])
    stages = _table(["stage", "params hash", "git commit", "created (UTC)", "last run (UTC)", "ranks", "runs"], rows, 3)
    versions = json.loads(prov_self.get("versions", "{}"))
    vt = _table(["package", "version"], [[escape(k), escape(str(v))] for k, v in sorted(versions.items())], 2)
    return stages + "<h3>Versions (this report's run)</h3>" + vt


def write_html(path: Path, s: dict, data, params, prov_self: dict) -> None:
    rp, ip = params.report, params.interpret
    mode = s["data_mode"]
    notes = s["lx_notes"]
    it = s["interpretation"]
    figs = s["figures"]
    ex = s["examples"]
    lo, hi = rp.subset_log_m500c
    approx = "approx" in mode.lower()
    core = ", ".join(_f(v, "{:+.3f}") for v in it["median_dn_over_n_core"])
    ring = ", ".join(_f(v, "{:+.3f}") for v in it["median_dn_over_n_0p2_1"])
    dlogm = ", ".join(f"{v:+.4f}" for v in it["mean_dlogm_per_iteration"])
    body = f"""
<h1>hpcmass report — {escape(params.run.name)}</h1>
<p class=muted>{s['n_clusters']} clusters × {s['n_views']} views, {data.n_folds}-fold cross-validation.
Reproduces Ntampaka et al. 2019, <i>A Deep Learning Approach to Galaxy Cluster X-ray Masses</i>.</p>
<p class="{'warn' if approx else ''}">Data mode: <b>{escape(mode)}</b>{
    ' — the images were made with the suite’s own labelled approximations of the SOXS/AtomDB files '
    '(no network here), not with the staged real data; numbers are not the paper’s and need not match.'
    + soft_band_note(params.observe.bands) if approx else ''}</p>
<h2>This run beside the paper</h2>
{_headline(s, params)}
<p>δ = log M<sub>predicted</sub> − log M<sub>true</sub>, one value per view. Gaussian fits are maximum
likelihood; brackets are 68% percentile intervals over {rp.bootstrap_resamples} bootstrap resamples of
clusters (a cluster’s views stay together). Scatter in percent = ln(10) σ, the paper’s convention. The
best fold is the one whose kept model has the lowest validation loss (chosen without the test clusters;
the paper’s “best-fit fold” by test σ would select on the result), the same fold for every row. The
L<sub>X</sub> rows are the scatter of the mass predicted from core-excised L<sub>X</sub>; the oracle rows
that of quantities measured on the gas cells themselves.</p>
{_figure(figs['fig1'], 'Figure 1. One view of clusters spread over the mass range: photons per pixel, log N '
         f'({params.observe.emin_kev:g}–{params.observe.emax_kev:g} keV, {_exposure(params.observe)}'
         + (f'; the sum of the CNN’s {len(params.observe.bands)} bands, {bands_label(params.observe.bands)}'
            if len(params.observe.bands) > 1 else '') + ').')}
{_figure(figs['fig3'], 'Figure 3. Predicted against true mass for every view of every cluster, coloured by '
         'test fold; vertical streams are a cluster’s views. Black: median and 16–84% half-width in mass bins.')}
{_figure(figs['fig4'], 'Figure 4. PDF of δ for all folds (blue) with its Gaussian fit (green dashed), the best '
         'fold (pink) and its fit (purple dashed); red band: Gaussians of the core-excised L<sub>X</sub> '
         'baseline of this run between its R<sub>500c</sub>-error levels on the whole aperture.')}
<h2>Per fold</h2>
{_training(s['training'])}
{_folds(s)}
{_figure(figs['fig_training'], 'Training (grey) and validation (blue) loss of every fold; dots: epochs meeting '
         'the paper’s criteria; dashed line: the epoch whose model was kept.')}
<h2>Core-excised L<sub>X</sub> baseline</h2>
<p>L<sub>X</sub> from the mock images: background-subtracted counts converted with the ACIS-I response.
Aperture {rp.lx_inner_r500c:g}–{rp.lx_outer_r500c:g} R<sub>500c</sub> about the image centre, measured on
each of the three projections. The paper’s “outer aperture with a 3% / 5% error with R<sub>500</sub>” is
read two ways: a Gaussian error of {' or '.join(f'{100 * e:g}%' for e in rp.lx_aperture_errors)} of
R<sub>500c</sub> on the outer radius alone, or on R<sub>500c</sub> itself, which moves both radii as an
observer’s R<sub>500c</sub> estimate would (one draw per cluster, scaled to each level). A third aperture
needs no truth: each test projection starts from its training clusters’ median mass and its aperture
follows the mass its own L<sub>X</sub> gives through its fold’s relation until log M moves by less than
10<sup>−4</sup> dex ({100 * notes['iterated_converged']:.0f}% converged, median
{_f(notes['iterated_median_iterations'], '{:.0f}')} iterations). Background: {notes['background_per_pixel']:.3f}
counts per pixel in {notes['exposure_s'] / 1e3:g} ks{
    ' (scaled to each projection’s own exposure, as are the counts to a rate)'
    if params.observe.exposure_range_ks is not None else ''}: {_background(notes)}{
    '; where the detector was not (chip gaps, off-chip corners: each view’s exposure map from SOXS) nothing is '
    'subtracted and the beta model fills the counts, as an observer’s exposure map would' if notes['exposure_map']
    else ''}.
Counts to luminosity: {notes['erg_cm2_per_count']:.3g} erg cm<sup>−2</sup> per count (effective area
from {escape(notes['arf'])}, exp(−E/kT)/E photon spectrum with
kT = {notes['ecf_kt_kev']:g} keV over {notes['band_kev'][0]:g}–{notes['band_kev'][1]:g} keV) and
D<sub>L</sub>(z = {notes['redshift']:g}) for Planck 2015; one factor for all clusters, so it sets the
normalisation of the relation and not its scatter.
The median cluster has {100 * notes['median_covered']:.0f}% of its exact annulus inside the
{params.observe.image_pixels}-pixel image; for {100 * notes['fraction_extrapolated']:.0f}% of the
projections the part outside was filled with a β-model fitted to the image beyond the inner radius.
{notes['non_positive']} exact-aperture measurement(s) had no net counts and are left out. A power law
log M = a + b (log L<sub>X</sub> − pivot) is fitted on each fold’s training clusters (at their true
apertures) and predicts its test clusters (slopes b per fold, exact aperture:
{', '.join(f'{v:.2f}' for v in notes['slopes']['exact'].values())}).</p>
<p class=verdict>{_aperture_effect(s)}</p>
{_table(['L<sub>X</sub> aperture (images)', 'σ all [dex]', 'μ all [dex]', f'best fold ({s["cnn"]["best_fold"]}) σ',
         f'{lo:g}–{hi:g} σ'],
        [[_sub(v['label']), _fit(v['all']), _fit(v['all'], 'mu'), _fit(v['best']), _fit(v['subset'])]
         for v in s['lx_image'].values()])}
<h2>Oracles: what the sample itself permits</h2>
{_oracles(s)}
<h2>What the CNN looks at</h2>
<p>DeepDream-style: the gradient of the predicted log M<sub>500c</sub> with respect to the input counts,
{'rescaled to an RMS of ' + f'{ip.step:g}' + ' count(s) per pixel' if ip.gradient_norm == 'rms'
 else f'times {ip.step:g}'}, is added to the image; negative pixels are set to 0 and counts rounded;
{ip.iterations} iterations, each view explained with its own test fold’s model. ΔN = N<sub>t</sub> − N<sub>0</sub>;
ΔN/N per annulus is the ratio of the photon sums.
Median ΔN/N inside {ip.core_r500c:g} R<sub>500c</sub>, per iteration: {core}; between 0.2 and
1 R<sub>500c</sub>: {ring}. Mean change of the predicted log M per iteration: {dlogm} dex.
{it['off_centre_views']} of {it['views']} views ({it['off_centre_clusters']} clusters, by a majority of
their views) have their strongest response more than {it['offcentre_threshold_r500c']:g} R<sub>500c</sub>
from the centre.</p>
{_figure(figs['fig5'], f'Figure 5. Two iterations for cluster {ex["typical"]} (left block, median mass) and '
         f'cluster {ex["outlier"]} (right block, the largest off-centre response'
         f'{"" if ex["outlier_flagged"] else ", below the flag threshold"}). Rows: log N; ΔN; dark where '
         f'ΔN/N ≤ {100 * ip.small_change:g}%. Circles: {rp.lx_inner_r500c:g} (solid) and 1 (dashed) R<sub>500c</sub>.')}
{_figure(figs['fig6'], 'Figure 6. ΔN/N against projected radius: median over all views with its 16–84% band '
         '(iteration 1 red solid, iteration 2 blue dotted), thin lines for a sample of clusters, green for the '
         'cluster of Figure 5’s right block.')}
<h3>The same procedure on models that know no masses, and occlusion</h3>
<p>The rescaling to a fixed RMS and the rounding to whole photons limit any pixel’s change to a few
counts, so ΔN/N falls towards a bright core whatever the model; a log(1+N) input scaling divides the
gradient by 1+N once more (this run’s <code>dataset.scaling</code>: {escape(params.dataset.scaling)}). Nulls through the identical iterations: {_nulls_text(it)}. The core response is
|ΔN|/N within {ip.core_r500c:g} R<sub>500c</sub> over |ΔN|/N in {ip.outskirts_r500c[0]:g}–{ip.outskirts_r500c[1]:g}
R<sub>500c</sub> after the last iteration (median over a cluster’s views, then over clusters; 68% intervals from
{rp.bootstrap_resamples} cluster resamples; trained CNN − null paired on the same clusters).
Occlusion needs no gradient: each region of every view is replaced by a Poisson draw of the mean
radial profile of its fold’s training clusters, scaled to the cluster’s R<sub>500c</sub> and to its counts
outside the region, and the view is predicted again by its fold’s model. The noise floor is the same
region refilled from the view’s own radial profile (its counts and shape kept, only the photons redrawn);
the excess over it is what the region’s own content tells the network.</p>
<p class=verdict>{'<br>'.join(escape(line) for line in it['verdict'])}</p>
{_figure(figs['fig7'], 'Figure 7. (a) Median ΔN/N after the last iteration for the trained CNN and each null; '
         f'vertical lines at {ip.core_r500c:g} and {ip.outskirts_r500c[0]:g}–{ip.outskirts_r500c[1]:g} R<sub>500c</sub>. '
         '(b) Core response of each cluster (dots) with the median and its 68% interval (bars). (c) Mean |Δ log M| '
         'of each cluster’s views when a region is filled from the fold’s mean profile or, as the noise floor, '
         'from the view’s own; red dashed line: the CNN’s σ.')}
<h2>Files</h2>
<p><a href="clusters.csv">clusters.csv</a> (one row per cluster) · <a href="summary.json">summary.json</a>
(every number on this page)</p>
<h2>Provenance</h2>
{_provenance(data, prov_self)}
<h3>Parameters</h3>
<pre>{escape(prov_self.get('params_yaml', ''))}</pre>
"""
    path.write_text(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>hpcmass report — "
                    f"{escape(params.run.name)}</title><style>{_CSS}</style></head><body>{body}</body></html>")
