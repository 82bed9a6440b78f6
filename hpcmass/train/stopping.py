"""When a fold stops, and which of its epochs' models it keeps.

The paper's criteria (Sect. 2.2), evaluated on the validation fold after every epoch:
δ = log M_pred − log M_true over every validation view; max|δ| < 0.3, |median δ| < 0.02 and the
slope of the best-fit line through (true, predicted) > 0.9.

The slope is that of the least-squares line of predicted against true log M — the line through
the paper's Fig. 3, which plots predictions (vertical streams of a cluster's 24 views) against
the true mass. Regression towards the mean, which the paper reports, makes it < 1; the criterion
asks that this be mild. It is undefined (NaN: not met) when the validation fold holds a single mass.

Two rules (``train.stopping``) turn a fold's per-epoch record into a decision (:func:`decide`, a
pure function of the history, so a resumed fold decides exactly as an uninterrupted one):

- ``paper``: stop at the first epoch that meets the criteria and keep it; otherwise keep the
  model of ``train.max_epochs``. With our output bias started at the training mean and log1p
  counts, the criteria hold after 2–5 epochs, long before the validation loss stops falling.
- ``plateau`` (default): the criteria are necessary, not sufficient. A fold may stop only once they
  have held in some epoch, and then when ``train.patience`` epochs have passed without a lower
  validation loss (else at ``train.max_epochs``); it keeps the epoch of lowest validation loss,
  so its model is never worse on the validation fold than any other epoch it trained. Whether the
  criteria held at that epoch is recorded (they did in every fold of the issue-18 study that met
  them at all). The validation loss of a 20-cluster fold jumps by 30–50% from epoch to epoch, so
  a short patience stops on noise: measured, patience 5/10/20 gave a test scatter of 0.054/0.053/
  0.050 dex on 100 clusters (studies/learning_curves.py; README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RULES = ("plateau", "paper")


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


@dataclass(frozen=True)
class Decision:
    """After the last epoch of a history: stop now?, and the epoch whose model is kept if so."""

    stop: bool
    #: 1-based epoch whose model is kept (were training to end now); 0 before the first epoch.
    kept: int
    #: the criteria held at the kept epoch
    met: bool
    #: why the fold stopped, or what it waits for
    reason: str


def decide(val_loss: Sequence[float], val_met: Sequence[float], rule: str, patience: int,
           max_epochs: int) -> Decision:
    """The decision of ``rule`` after ``len(val_loss)`` epochs with these validation records."""
    if rule not in RULES:
        raise ValueError(f"unknown stopping rule {rule!r}; expected one of {', '.join(RULES)}")
    loss = np.asarray(val_loss, dtype=float)
    met = np.asarray(val_met, dtype=float) > 0
    epoch = loss.size
    if epoch == 0:
        return Decision(False, 0, False, "no epoch yet")
    at_max = epoch >= max_epochs
    if rule == "paper":
        if met.any():
            first = int(np.argmax(met)) + 1
            return Decision(True, first, True, f"the paper's criteria first met in epoch {first}")
        return Decision(at_max, epoch, False, "max_epochs reached, criteria never met" if at_max else
                        "criteria not met yet")
    best = int(np.argmin(np.where(np.isfinite(loss), loss, np.inf))) + 1  # a NaN loss never counts as best
    kept_met = bool(met[best - 1])
    if not met.any():
        return Decision(at_max, best, kept_met, "max_epochs reached, criteria never met: the lowest validation "
                        "loss kept" if at_max else "criteria not met yet")
    if epoch - best >= patience:
        return Decision(True, best, kept_met, f"criteria met (first in epoch {int(np.argmax(met)) + 1}); no lower "
                                              f"validation loss in the {patience} epochs after epoch {best}")
    return Decision(at_max, best, kept_met, "max_epochs reached before the validation loss settled" if at_max else
                    f"waiting for {patience - (epoch - best)} more epoch(s) without a lower validation loss")
