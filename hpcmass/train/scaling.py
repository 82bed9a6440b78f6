"""Input scaling of photon-count images (param ``dataset.scaling``).

The paper feeds images to the CNN without stating a transform. hpcmass applies the scaling as
the model's first layer, so the model takes raw counts: predictions, stored models and the
DeepDream-style input gradients are all in counts, whatever the scaling.

- ``none``: raw counts (the paper's literal input).
- ``log1p``: log(1 + N), the default (see ``DatasetParams.scaling``): invertible, zero stays zero,
  and a cluster's brightness (total counts ~ M^1.5 or so) enters additively.
- ``asinh``: asinh(N), log-like for bright pixels, linear for faint ones.

All three have a finite derivative at N = 0 (sqrt would not), which the input gradients need.
"""

from __future__ import annotations

import numpy as np

METHODS = ("none", "log1p", "asinh")


def scale_images(x, method: str):
    """Scaled float32 copy of counts ``x``: numpy in, numpy out; TensorFlow tensor in, tensor out."""
    if method not in METHODS:
        raise ValueError(f"unknown scaling {method!r}; expected one of {', '.join(METHODS)}")
    if isinstance(x, (np.ndarray, np.generic, int, float)):
        x = np.asarray(x, dtype=np.float32)
        fn = {"none": lambda a: a, "log1p": np.log1p, "asinh": np.arcsinh}[method]
        return fn(x).astype(np.float32, copy=False)
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    fn = {"none": tf.identity, "log1p": tf.math.log1p, "asinh": tf.math.asinh}[method]
    return fn(x)
