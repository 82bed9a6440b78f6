"""Null models for the DeepDream-style interpretation: functions that know nothing about masses.

The paper reads "Delta N / N ~ 0 inside ~0.15 R500c" as "the CNN ignores the core". But the
procedure itself suppresses bright pixels: the gradient is rescaled to a fixed RMS and rounded to
whole photons, so a pixel holding N counts changes by at most a few counts whatever the model,
and Delta N / N falls as 1/N towards the core. With ``dataset.scaling: log1p`` in front of the
model, d/dN = d/d log1p(N) x 1/(1 + N) suppresses the core again. A null run through the identical
procedure shows how much of the picture is the procedure's:

- ``untrained``: the fold's CNN with the weights its training started from
  (:func:`hpcmass.train.fold.initial_model`): the same architecture and input scaling, no training.
- ``sum_log1p``: f = sum over pixels of log(1 + N). df/dN = 1/(1 + N): the scaling alone.
- ``log_sum``: f = log10 of the total counts. df/dN is the same for every pixel, so after the RMS
  rescaling every pixel gains exactly ``step`` counts: Delta N / N in an annulus is its pixels
  over its counts, the procedure's own profile.

Each is a :data:`hpcmass.interpret.dream.Predict`: raw counts (batch, bands, P, P) in, (batch,) out.
"""

from __future__ import annotations

import numpy as np

#: The analytic nulls (the ``untrained`` null needs a fold and is built by the interpret stage).
ANALYTIC = ("sum_log1p", "log_sum")
#: Labels for tables and figures.
LABELS = {"cnn": "trained CNN", "untrained": "untrained CNN", "sum_log1p": "Σ log(1+N)", "log_sum": "log Σ N"}


def analytic_null(name: str):
    """The analytic null ``name`` as a TensorFlow-differentiable function of raw counts."""
    import tensorflow as tf

    def per_image(x):  # every axis but the batch's: all bands and pixels of an image
        return tf.reduce_sum(x, axis=tf.range(1, tf.rank(x)))

    if name == "sum_log1p":
        return lambda counts: per_image(tf.math.log1p(tf.cast(counts, tf.float32)))
    if name == "log_sum":
        return lambda counts: tf.math.log(per_image(tf.cast(counts, tf.float32))) / np.log(10.0)
    raise ValueError(f"unknown analytic null {name!r}; expected one of {', '.join(ANALYTIC)}")
