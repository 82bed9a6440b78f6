"""The paper's stopping rule (Sect. 2.2), evaluated on the validation fold after every epoch.

δ = log M_pred − log M_true over every validation view. Training has converged when
max|δ| < 0.3, |median δ| < 0.02 and the slope of the best-fit line through (true, predicted)
exceeds 0.9; otherwise the model at the last epoch (400) is kept.

The slope is that of the least-squares line of predicted against true log M — the line through
the paper's Fig. 3, which plots predictions (vertical streams of a cluster's 24 views) against
the true mass. Regression towards the mean, which the paper reports, makes it < 1; the criterion
asks that this be mild. It is undefined (NaN: not met) when the validation fold holds a single mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Criteria:
    max_abs_delta: float
    median_delta: float
    slope: float
    met: bool

    def describe(self) -> str:
        return (f"max|δ| {self.max_abs_delta:.3f}  median δ {self.median_delta:+.4f}  slope {self.slope:.3f}"
                f"  ({'criteria met' if self.met else 'not met'})")


def evaluate(pred, true, max_abs_delta: float = 0.3, max_abs_median: float = 0.02,
             min_slope: float = 0.9) -> Criteria:
    """The stopping criteria for predictions ``pred`` of true log masses ``true`` (same shape)."""
    pred = np.asarray(pred, dtype=float).reshape(-1)
    true = np.asarray(true, dtype=float).reshape(-1)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"need equal, non-empty pred and true; got {pred.shape} and {true.shape}")
    delta = pred - true
    spread = true - true.mean()
    var = float(spread @ spread)
    slope = float(spread @ (pred - pred.mean()) / var) if var > 0 else float("nan")
    worst, median = float(np.max(np.abs(delta))), float(np.median(delta))
    # NaN anywhere (a diverged model, or an undefined slope) fails the comparisons: not met.
    met = bool(worst < max_abs_delta and abs(median) < max_abs_median and slope > min_slope)
    return Criteria(worst, median, slope, met)


def evaluate_params(pred, true, train_params) -> Criteria:
    """:func:`evaluate` with the thresholds of a ``TrainParams`` section."""
    return evaluate(pred, true, train_params.stop_max_abs_delta, train_params.stop_max_abs_median,
                    train_params.stop_min_slope)
