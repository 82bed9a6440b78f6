"""The paper's Figures 1 and 3-6 and the interpretation's nulls (Figure 7), drawn from this run's
numbers (matplotlib, object API, PNG).

Only ``matplotlib.figure.Figure`` is used (no pyplot state), so the figures draw headless on
any rank and never touch a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .stats import FoldStats, GaussFit

DPI = 110
#: Fold colours for up to 10 folds, then they repeat.
_FOLD_CMAP = "tab10"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _log_counts(image: np.ndarray) -> np.ndarray:
    """log10 N with empty pixels masked (drawn in the colour map's 'bad' colour)."""
    return np.ma.log10(np.ma.masked_less_equal(image.astype(np.float64), 0))


def figure1(images: np.ndarray, log_m: np.ndarray, path: Path, pixel_arcsec: float | None = None) -> Path:
    """Figure 1: one view of clusters across the mass range, log N per pixel, shared colour scale."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(2.3 * cols + 0.8, 2.3 * rows))
    vmax = max(float(np.log10(max(im.max(), 1))) for im in images)
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for ax, img, m in zip(axes.flat, images, log_m):
        im = ax.imshow(_log_counts(img), origin="lower", cmap="magma", vmin=0, vmax=vmax,
                       interpolation="nearest")
        ax.set_facecolor("black")
        ax.set_title(rf"$\log M_{{500c}}={m:.2f}$", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02)
    cb.set_label(r"$\log_{10} N$ (photons per pixel)")
    if pixel_arcsec:
        side = images.shape[-1] * pixel_arcsec / 60
        fig.suptitle(f"{n} clusters across the mass range (view 0; {side:.1f}' across)", y=0.93)
    return _save(fig, path)


def figure3(log_true: np.ndarray, pred: np.ndarray, fold: np.ndarray, fit: GaussFit, path: Path,
            binned: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Path:
    """Figure 3: predicted vs true log M500c, every view of every cluster, coloured by test fold."""
    fig = Figure(figsize=(6, 5.6))
    ax = fig.subplots()
    views = pred.shape[1]
    x = np.repeat(log_true, views)
    cmap = matplotlib.colormaps[_FOLD_CMAP]
    colours = cmap(np.repeat(fold, views) % cmap.N)
    ax.scatter(x, pred.ravel(), s=4, c=colours, alpha=0.5, linewidths=0, rasterized=True)
    lo = min(np.nanmin(pred), log_true.min()) - 0.05
    hi = max(np.nanmax(pred), log_true.max()) + 0.05
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="1:1")
    if binned is not None:
        centres, median, spread = binned
        ok = np.isfinite(median)
        ax.errorbar(centres[ok], median[ok], yerr=spread[ok], fmt="o-", color="k", ms=4, lw=1.2, capsize=2,
                    label="median, 16-84% half-width")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\log_{10} M_{500c,\mathrm{true}}\ [M_\odot]$")
    ax.set_ylabel(r"$\log_{10} M_{500c,\mathrm{predicted}}\ [M_\odot]$")
    ax.set_title(f"all folds, every view: σ = {fit.sigma:.3f} dex ({fit.percent:.1f}%), μ = {fit.mu:+.3f} dex",
                 fontsize=10)
    for k in np.unique(fold)[:cmap.N]:
        ax.scatter([], [], s=12, color=cmap(k % cmap.N), label=f"fold {k}")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return _save(fig, path)


def _gauss(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def figure4(delta_all: np.ndarray, delta_best: np.ndarray, stats: FoldStats,
            lx_fits: Sequence[tuple[str, GaussFit]], path: Path) -> Path:
    """Figure 4: PDF of delta with its Gaussian fit, the best fold's, and the L_X baseline as a band."""
    d_all = delta_all[np.isfinite(delta_all)]
    d_best = delta_best[np.isfinite(delta_best)]
    fig = Figure(figsize=(7, 4.6))
    ax = fig.subplots()
    span = max(0.3, 4 * max([stats.all.sigma] + [f.sigma for _, f in lx_fits if np.isfinite(f.sigma)]))
    x = np.linspace(-span, span, 400)
    bins = np.linspace(-span, span, 41)
    if lx_fits:
        sig = [f.sigma for _, f in lx_fits]
        lo, hi = _gauss(x, 0, min(sig)), _gauss(x, 0, max(sig))
        pct = [f.percent for _, f in lx_fits]
        span_txt = (f"{min(sig):.3f} dex ({min(pct):.1f}%)" if round(min(sig), 3) == round(max(sig), 3)
                    else f"{min(sig):.3f}–{max(sig):.3f} dex ({min(pct):.1f}–{max(pct):.1f}%)")
        label = f"core-excised $L_X$ ({', '.join(name for name, _ in lx_fits)} aperture error): σ = {span_txt}"
        ax.fill_between(x, np.minimum(lo, hi), np.maximum(lo, hi), color="tab:red", alpha=0.25, lw=0, label=label)
        for name, f in lx_fits:
            ax.plot(x, _gauss(x, 0, f.sigma), color="tab:red", lw=0.8, alpha=0.7)
    ax.hist(d_all, bins=bins, density=True, histtype="step", color="tab:blue", lw=1.8,
            label=f"all folds ({stats.all.n_clusters} clusters, {d_all.size} views)")
    ax.plot(x, _gauss(x, stats.all.mu, stats.all.sigma), "--", color="tab:green", lw=1.6,
            label=f"Gaussian fit: σ = {stats.all.sigma:.3f}±{stats.all.sigma_err:.3f}, "
                  f"μ = {stats.all.mu:+.3f}±{stats.all.mu_err:.3f}")
    best = stats.per_fold[stats.best_fold]
    ax.hist(d_best, bins=bins, density=True, histtype="step", color="tab:pink", lw=1.6,
            label=f"best fold ({stats.best_fold}: lowest validation loss)")
    ax.plot(x, _gauss(x, best.mu, best.sigma), "--", color="tab:purple", lw=1.4,
            label=f"best-fold fit: σ = {best.sigma:.3f}, μ = {best.mu:+.3f}")
    ax.set_xlim(-span, span)
    ax.set_xlabel(r"$\delta = \log M_\mathrm{predicted} - \log M_\mathrm{true}$ [dex]")
    ax.set_ylabel("PDF")
    ax.legend(fontsize=7.5, loc="upper left")
    return _save(fig, path)


@dataclass(frozen=True)
class DreamExample:
    title: str
    image: np.ndarray  # (P, P) input counts of the view
    dn: np.ndarray  # (iterations, P, P) N_t - N_0
    small: np.ndarray  # (iterations, P, P) bool small-change mask
    r500c_pix: float


def figure5(examples: Sequence[DreamExample], path: Path, small_change: float = 0.02,
            rings: tuple[float, float] = (0.15, 1.0)) -> Path:
    """Figure 5: each example as a block: log N of the input and each iteration (top row), Delta N
    (middle), the small-change mask (bottom; dark = small change); circles at 0.15 and 1 R500c."""
    iters = examples[0].dn.shape[0]
    cols = iters + 1
    fig = Figure(figsize=(2.6 * cols * len(examples), 2.55 * 3 + 0.4))
    grid = fig.subplots(3, cols * len(examples), squeeze=False)
    for e, ex in enumerate(examples):
        axes = grid[:, e * cols:(e + 1) * cols]
        p = ex.image.shape[-1]
        c = (p - 1) / 2
        frames = [ex.image] + [ex.image + ex.dn[t] for t in range(iters)]
        vmax = np.log10(max(max(f.max() for f in frames), 1))
        lim = max(float(np.percentile(np.abs(ex.dn), 98)), 1.0)  # most changes are a photon or two
        for t in range(cols):
            ax = axes[0, t]
            ax.imshow(_log_counts(frames[t]), origin="lower", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_facecolor("black")
            ax.set_title("input, log N" if t == 0 else f"iteration {t}, log N", fontsize=9)
            if t == 0:
                axes[1, 0].text(0.5, 0.5, ex.title, ha="center", va="center", fontsize=8.5,
                                transform=axes[1, 0].transAxes)
                axes[1, 0].set_axis_off()
                axes[2, 0].set_axis_off()
                continue
            dn_im = axes[1, t].imshow(ex.dn[t - 1], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                      interpolation="nearest")
            axes[1, t].set_title(f"ΔN, iteration {t}", fontsize=9)
            axes[2, t].imshow(ex.small[t - 1], origin="lower", cmap="gray_r", vmin=0, vmax=1.25,
                              interpolation="nearest")
            axes[2, t].set_title(f"ΔN/N ≤ {100 * small_change:g}%, iteration {t}", fontsize=9)
            fig.colorbar(dn_im, ax=axes[1, t], shrink=0.75, pad=0.02)
        for ax in axes[:, 1:].flat:
            for r, style in zip(rings, ("-", "--")):
                ax.add_patch(Circle((c, c), r * ex.r500c_pix, fill=False, ls=style, lw=0.9, color="tab:green"))
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        for r, style in zip(rings, ("-", "--")):
            axes[0, 0].add_patch(Circle((c, c), r * ex.r500c_pix, fill=False, ls=style, lw=0.9, color="tab:green"))
    return _save(fig, path)


def figure6(edges: np.ndarray, median: np.ndarray, p16: np.ndarray, p84: np.ndarray,
            sample: np.ndarray, outlier: np.ndarray | None, path: Path, outlier_label: str = "") -> Path:
    """Figure 6: Delta N / N against R/R500c: median over all views with its 16-84% band per
    iteration, a representative sample of clusters (thin), and the most off-centre response."""
    r = 0.5 * (edges[1:] + edges[:-1])
    fig = Figure(figsize=(7, 4.6))
    ax = fig.subplots()
    styles = [("tab:red", "-"), ("tab:blue", ":"), ("tab:orange", "-."), ("tab:purple", "--")]
    for t in range(median.shape[0]):
        colour, ls = styles[t % len(styles)]
        for prof in sample:
            ax.plot(r, prof[t], color=colour, ls=ls, lw=0.6, alpha=0.35)
        ax.fill_between(r, p16[t], p84[t], color=colour, alpha=0.12, lw=0)
        ax.plot(r, median[t], color=colour, ls=ls, lw=2.2, label=f"iteration {t + 1}: median, 16–84%")
        if outlier is not None:
            ax.plot(r, outlier[t], color="tab:green", ls=ls, lw=1.8,
                    label=f"{outlier_label}, iteration {t + 1}" if outlier_label else None)
    for x0, ls in ((0.15, "-"), (1.0, "--")):
        ax.axvline(x0, color="0.5", ls=ls, lw=0.8)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xlim(0, edges[-1])
    ax.set_xlabel(r"$R / R_{500c}$")
    ax.set_ylabel(r"$\Delta N / N$")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _strip(ax, groups: Sequence[tuple[str, np.ndarray, dict]], colours: Sequence[str]) -> None:
    """One column per group: each cluster's value (dots, jittered) and the median with its interval."""
    jitter = np.random.default_rng(0)  # fixed: the figure is the same on every run
    for x, (label, values, iv) in enumerate(groups):
        colour = colours[x % len(colours)]
        v = values[np.isfinite(values)]
        ax.plot(x + jitter.uniform(-0.18, 0.18, v.size), v, ".", ms=3.5, color=colour, alpha=0.5)
        if np.isfinite(iv["lo"]):
            ax.errorbar([x], [iv["median"]], yerr=[[iv["median"] - iv["lo"]], [iv["hi"] - iv["median"]]], fmt="_",
                        ms=22, mew=2.2, color="k", capsize=5, lw=1.6)
    ax.set_xticks(range(len(groups)), [g[0].replace(" ", "\n", 1) if "\n" not in g[0] else g[0] for g in groups],
                  fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)


def figure7(edges: np.ndarray, profiles: dict[str, np.ndarray], core: Sequence[tuple[str, np.ndarray, dict]],
            occlusion: Sequence[tuple[str, np.ndarray, dict]], sigma_cnn: float, core_r500c: float,
            outskirts_r500c: tuple[float, float], path: Path) -> Path:
    """The interpretation against its nulls: (a) median Delta N / N after the last iteration for the
    trained CNN and each null (label -> profile); (b) each cluster's core response per explainer
    with the median and its 68% interval; (c) each cluster's mean |Delta log M| when a region is
    occluded by each fill (label, per-cluster values, interval), against the CNN's scatter."""
    r = 0.5 * (edges[1:] + edges[:-1])
    colours = ["tab:red", "0.35", "tab:blue", "tab:green", "tab:purple"]
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_p, ax_c, ax_o = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for (label, prof), colour in zip(profiles.items(), colours):
        ax_p.plot(r, prof, color=colour, lw=2.4 if colour == colours[0] else 1.5, label=label)
    for x0, ls in ((core_r500c, "-"), *((x, "--") for x in outskirts_r500c)):
        ax_p.axvline(x0, color="0.5", ls=ls, lw=0.8)
    ax_p.set_yscale("symlog", linthresh=1e-3)
    if all(np.nanmin(prof, initial=0.0) >= 0 for prof in profiles.values()):
        ax_p.set_ylim(bottom=0)
    ax_p.set_xlim(0, edges[-1])
    ax_p.set_xlabel(r"$R / R_{500c}$")
    ax_p.set_ylabel(r"median $\Delta N / N$, last iteration")
    ax_p.legend(fontsize=8)
    ax_p.set_title("(a) one procedure: the trained CNN and its nulls", fontsize=9)
    _strip(ax_c, core, colours)
    ax_c.set_yscale("symlog", linthresh=1e-3)
    ax_c.set_ylim(bottom=0)  # |Delta N| / N is never negative
    ax_c.set_ylabel(r"$|\Delta N|/N$ at $R<%g$ over $%g$–$%g\,R_{500c}$" % (core_r500c, *outskirts_r500c))
    ax_c.set_title("(b) core response per cluster, median and 68% interval", fontsize=9)
    _strip(ax_o, occlusion, ["tab:orange", "0.6", "tab:cyan", "0.6"])
    ax_o.axhline(sigma_cnn, color="tab:red", ls="--", lw=1, label=f"CNN σ ({sigma_cnn:.3f} dex)")
    ax_o.set_ylim(bottom=0)
    ax_o.set_ylabel(r"mean $|\Delta \log_{10} M|$ of the views [dex]")
    ax_o.legend(fontsize=8)
    ax_o.set_title("(c) occlusion: average cluster vs own profile", fontsize=9)
    return _save(fig, path)


@dataclass(frozen=True)
class FoldCurves:
    """One fold's per-epoch record (NaN-free, length = epochs trained) and the epochs kept by rules."""

    fold: int
    loss: np.ndarray
    val_loss: np.ndarray
    val_met: np.ndarray
    kept: dict[str, int]  # rule label -> 1-based epoch
    #: per-epoch test σ² [dex²] (studies only; the train stage never looks at the test fold)
    test_sigma2: np.ndarray | None = None


def learning_curves(curves: Sequence[FoldCurves], path: Path, title: str = "") -> Path:
    """Training and validation loss of every fold against epoch, the epochs meeting the paper's
    criteria marked, and a line at the epoch each stopping rule kept."""
    columns = min(len(curves), 2)
    rows = -(-len(curves) // columns)
    fig = Figure(figsize=(5.2 * columns, 2.5 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, squeeze=False)).ravel()
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    for ax, c in zip(axes, curves):
        epochs = np.arange(1, c.loss.size + 1)
        ax.semilogy(epochs, c.loss, color="0.55", lw=1, label="training loss")
        ax.semilogy(epochs, c.val_loss, color="tab:blue", lw=1.4, label="validation loss")
        met = c.val_met > 0
        ax.plot(epochs[met], c.val_loss[met], "o", ms=2.5, color="tab:blue", label="paper's criteria met")
        if c.test_sigma2 is not None:
            ax.semilogy(epochs, c.test_sigma2, color="tab:red", ls=":", lw=1.2, label="test σ² (study only)")
        for (label, epoch), colour in zip(c.kept.items(), ("tab:orange", "tab:green", "tab:purple", "tab:brown")):
            ax.axvline(epoch, color=colour, lw=1, ls="--", label=f"kept: {label}")
        ax.set_title(f"fold {c.fold}", fontsize=9)
        ax.set_ylabel("MSE [dex²]")
    for ax in axes[-columns:]:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
