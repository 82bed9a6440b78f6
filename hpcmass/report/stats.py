"""Scatter statistics of mass residuals, delta = log10 M_pred - log10 M_true (the paper's eq. 1).

The 24 views of one cluster are not independent measurements, so every bootstrap resamples
clusters and keeps all of a cluster's views together; each fit carries the bootstrap standard error
and the 68% percentile interval (16th-84th percentile of the resampled fits). Scatter in percent is ln(10) x sigma
(the paper's 0.051 dex -> 11.6%, 0.033 -> 7.7%).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


#: Confidence level of every interval the report gives.
INTERVAL = 0.68


@dataclass(frozen=True)
class GaussFit:
    mu: float
    sigma: float
    mu_err: float
    sigma_err: float
    n_clusters: int
    n_values: int
    mu_lo: float = float("nan")  # 68% cluster-bootstrap interval of mu
    mu_hi: float = float("nan")
    sigma_lo: float = float("nan")
    sigma_hi: float = float("nan")

    @property
    def percent(self) -> float:
        return scatter_percent(self.sigma)

    def as_dict(self) -> dict:
        return {**asdict(self), "percent": self.percent}


def scatter_percent(sigma_dex: float) -> float:
    return 100.0 * np.log(10.0) * sigma_dex


def bootstrap_clusters(values: np.ndarray, statistic, n_resamples: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard errors and 68% percentile intervals (low, high) of ``statistic(rows)`` with rows
    (clusters) resampled with replacement."""
    idx = np.arange(values.shape[0])
    res = stats.bootstrap((idx,), lambda i: statistic(values[i.astype(int)]), vectorized=False,
                          n_resamples=n_resamples, method="percentile", confidence_level=INTERVAL,
                          rng=np.random.default_rng(seed))
    return tuple(np.atleast_1d(v) for v in (res.standard_error, *res.confidence_interval))


def gaussian_fit(delta: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> GaussFit:
    """Maximum-likelihood Gaussian (mu, sigma) of the residuals with cluster-bootstrap errors.

    ``delta`` is (clusters,) or (clusters, views); NaNs (views without a prediction) are dropped.
    """
    delta = np.asarray(delta, dtype=np.float64)
    rows = delta.reshape(delta.shape[0], int(np.prod(delta.shape[1:])))  # also when there are no clusters
    rows = rows[np.isfinite(rows).any(axis=1)]
    if rows.shape[0] < 2:
        nan = float("nan")
        flat = rows[np.isfinite(rows)]
        mu, sigma = (stats.norm.fit(flat) if flat.size else (nan, nan))
        return GaussFit(float(mu), float(sigma), nan, nan, rows.shape[0], int(flat.size))

    def fit(r):
        v = r[np.isfinite(r)]
        return np.array(stats.norm.fit(v))

    mu, sigma = fit(rows)
    (mu_err, sigma_err), lo, hi = bootstrap_clusters(rows, fit, n_resamples, seed)
    return GaussFit(float(mu), float(sigma), float(mu_err), float(sigma_err), rows.shape[0],
                    int(np.isfinite(rows).sum()), float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


@dataclass(frozen=True)
class MassBias:
    """delta = intercept + slope x (log M_true - pivot): slope < 0 is the paper's pull toward the mean."""

    slope: float
    slope_err: float
    intercept: float
    pivot: float

    def as_dict(self) -> dict:
        return asdict(self)


def mass_bias(log_true: np.ndarray, delta: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> MassBias:
    """Linear trend of the residual with true mass, fitted to every view, cluster-bootstrap error."""
    log_true = np.asarray(log_true, dtype=np.float64)
    rows = np.asarray(delta, dtype=np.float64).reshape(log_true.size, -1)
    pivot = float(np.mean(log_true))
    table = np.column_stack([log_true - pivot, rows])

    def fit(t):
        x = np.repeat(t[:, 0], t.shape[1] - 1)
        y = t[:, 1:].ravel()
        ok = np.isfinite(y)
        if np.unique(x[ok]).size < 2:  # a resample of the few clusters with a prediction: no line through it
            return np.full(2, np.nan)
        return np.polyfit(x[ok], y[ok], 1)

    slope, intercept = fit(table)
    slope_err = bootstrap_clusters(table, lambda t: fit(t)[0], n_resamples, seed)[0][0]
    return MassBias(float(slope), float(slope_err), float(intercept), pivot)


def binned_median(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, median and 16/84 spread half-width of y in bins of x (NaN for empty bins)."""
    res = stats.binned_statistic(x, y, statistic="median", bins=edges)
    lo = stats.binned_statistic(x, y, statistic=lambda v: np.percentile(v, 16) if v.size else np.nan, bins=edges)
    hi = stats.binned_statistic(x, y, statistic=lambda v: np.percentile(v, 84) if v.size else np.nan, bins=edges)
    return 0.5 * (edges[1:] + edges[:-1]), res.statistic, 0.5 * (hi.statistic - lo.statistic)


@dataclass(frozen=True)
class FoldStats:
    """Every fit the report shows for one estimator (the CNN, an L_X relation or an oracle)."""

    all: GaussFit
    per_fold: dict[int, GaussFit]
    best_fold: int
    subset: GaussFit
    best_subset: GaussFit  # the best fold's clusters within the subset mass range
    per_cluster: GaussFit
    bias: MassBias

    def as_dict(self) -> dict:
        return {"all": self.all.as_dict(), "per_fold": {int(k): v.as_dict() for k, v in self.per_fold.items()},
                "best_fold": int(self.best_fold), "best": self.per_fold[self.best_fold].as_dict(),
                "subset": self.subset.as_dict(), "best_subset": self.best_subset.as_dict(),
                "per_cluster": self.per_cluster.as_dict(), "bias": self.bias.as_dict()}


def best_fold_by_validation(val_loss: np.ndarray, epoch_kept: np.ndarray) -> int:
    """The fold whose kept model has the lowest validation loss: chosen without the test clusters
    (the paper's "best-fit fold" picked by its test scatter would be a selection on the result)."""
    return int(np.argmin([val_loss[k, int(e) - 1] for k, e in enumerate(epoch_kept)]))


def fold_statistics(pred: np.ndarray, log_true: np.ndarray, fold: np.ndarray, subset: tuple[float, float],
                    best_fold: int, n_resamples: int = 1000, seed: int = 0) -> FoldStats:
    """Gaussian fits of delta for all folds together, each fold alone, ``best_fold`` (chosen by the
    caller, e.g. :func:`best_fold_by_validation`, and the same for every estimator compared) and the
    clusters with ``subset[0] < log M_true < subset[1]`` (all folds, and the best fold's), plus the
    per-cluster-mean residual and the mass-dependent bias. ``pred`` is (clusters, views)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(len(log_true), -1)
    delta = pred - np.asarray(log_true)[:, None]
    per_fold = {int(k): gaussian_fit(delta[fold == k], n_resamples, seed + 1 + int(k)) for k in np.unique(fold)}
    in_subset = (log_true > subset[0]) & (log_true < subset[1])
    with np.errstate(invalid="ignore"):
        cluster_delta = np.nanmean(delta, axis=1)
    return FoldStats(
        all=gaussian_fit(delta, n_resamples, seed),
        per_fold=per_fold,
        best_fold=int(best_fold),
        subset=gaussian_fit(delta[in_subset], n_resamples, seed),
        best_subset=gaussian_fit(delta[in_subset & (fold == best_fold)], n_resamples, seed),
        per_cluster=gaussian_fit(cluster_delta, n_resamples, seed),
        bias=mass_bias(log_true, delta, n_resamples, seed),
    )


@dataclass(frozen=True)
class Interval:
    """A median over clusters with its 68% cluster-bootstrap percentile interval."""

    median: float
    lo: float
    hi: float
    n_clusters: int

    def as_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)


def median_interval(per_cluster: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> Interval:
    """Median of one value per cluster (NaNs dropped) and the 16th-84th percentile interval of the
    medians of ``n_resamples`` resamples of the clusters with replacement."""
    v = np.asarray(per_cluster, dtype=np.float64)
    v = v[np.isfinite(v)]
    nan = float("nan")
    if v.size == 0:
        return Interval(nan, nan, nan, 0)
    if v.size == 1:
        return Interval(float(v[0]), nan, nan, 1)
    res = stats.bootstrap((v,), np.median, n_resamples=n_resamples, method="percentile", confidence_level=INTERVAL,
                          rng=np.random.default_rng(seed))
    return Interval(float(np.median(v)), float(res.confidence_interval.low), float(res.confidence_interval.high),
                    int(v.size))


def quadrature_growth(scatter_small: float, scatter_large: float, error_small: float,
                      error_large: float) -> tuple[float, float]:
    """(k, s0) with scatter^2 = s0^2 + (k error)^2 through two (error, scatter) points: k is the scatter
    one unit of aperture error adds in quadrature, s0 the scatter without it (k = 0 where the larger
    error does not widen the scatter)."""
    k2 = max(scatter_large**2 - scatter_small**2, 0.0) / (error_large**2 - error_small**2)
    return float(np.sqrt(k2)), float(np.sqrt(max(scatter_small**2 - k2 * error_small**2, 0.0)))


def aperture_error_growth(delta_small: np.ndarray, delta_large: np.ndarray, error_small: float, error_large: float,
                          n_resamples: int = 1000, seed: int = 0) -> dict:
    """:func:`quadrature_growth` of the Gaussian scatters (percent) of two residual sets of the same
    clusters at two aperture errors (percent of R500c), with the 68% cluster-bootstrap interval of k."""
    rows = np.concatenate([np.asarray(d, dtype=np.float64).reshape(len(d), -1) for d in (delta_small, delta_large)],
                          axis=1)
    rows = rows[np.isfinite(rows).all(axis=1)]
    half = rows.shape[1] // 2
    e_s, e_l = 100 * error_small, 100 * error_large

    def growth(r):
        return np.array(quadrature_growth(scatter_percent(np.std(r[:, :half])), scatter_percent(np.std(r[:, half:])),
                                          e_s, e_l))

    k, s0 = growth(rows)
    _, lo, hi = bootstrap_clusters(rows, growth, n_resamples, seed)
    return {"k": float(k), "k_lo": float(lo[0]), "k_hi": float(hi[0]), "s0_percent": float(s0),
            "errors_percent": [e_s, e_l], "n_clusters": int(rows.shape[0])}
