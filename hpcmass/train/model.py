"""The paper's CNN (Ntampaka et al. 2019, Sect. 2.2) in tf-keras, and access to trained fold models.

Layers, exactly as listed in the paper (ReLU everywhere but the output, valid padding)::

    conv 3×3·16 → maxpool 2 → conv 3×3·32 → maxpool 2 → conv 3×3·64 → maxpool 2 → global average pool
    → dropout 0.1 → dense 200 → dropout 0.1 → dense 100 → dense 20 → dense 1 (log10 M500c)

58,437 trainable parameters whatever the image size (global average pooling) with the paper's one
energy band; each further band of ``observe.bands`` is another input channel of the first
convolution (+144 weights: 58,725 with three). In front sit two layers without parameters:
:class:`ScaleCounts` (``dataset.scaling``) and a permutation to channels-last, so the model takes
**raw counts** ``(batch, bands, P, P)`` float32 (the images of :mod:`hpcmass.images`): predictions
and input gradients (``tf.GradientTape`` on ``model(counts, training=False)``) are in counts.

Files: ``<workdir>/train/fold_KK/model.keras`` is the model of the epoch each fold's stopping rule
kept (``train.stopping``); :func:`load_fold_model` reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tf_keras
from tf_keras import layers

from ..atomic import atomic_path
from ..errors import StageError
from .files import model_path
from .scaling import METHODS, scale_images

#: Trainable parameters of the paper's CNN (its Sect. 2.2): one energy band.
PAPER_PARAMETERS = 58_437
#: First-convolution weights each further energy band adds (3 x 3 kernels, 16 filters).
PARAMETERS_PER_BAND = 3 * 3 * 16
#: Smallest image the three valid 3×3 convolutions and 2×2 poolings leave at least one pixel of.
MIN_PIXELS = 22
DROPOUT = 0.1


@tf_keras.saving.register_keras_serializable(package="hpcmass")
class ScaleCounts(layers.Layer):
    """``dataset.scaling`` of raw counts, as a layer (no weights) so the model's input is counts."""

    def __init__(self, method: str = "none", **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"unknown scaling {method!r}; expected one of {', '.join(METHODS)}")
        self.method = method

    def call(self, inputs):
        return scale_images(inputs, self.method)

    def get_config(self):
        return {**super().get_config(), "method": self.method}


def expected_parameters(bands: int) -> int:
    """Trainable parameters of the paper's CNN taking ``bands`` energy bands as channels."""
    return PAPER_PARAMETERS + PARAMETERS_PER_BAND * (bands - 1)


def build_model(pixels: int, scaling: str = "log1p", seed: int = 0, bands: int = 1) -> tf_keras.Sequential:
    """The paper's CNN for ``(bands, pixels, pixels)`` count images.

    ``seed`` seeds the dropout layers' own generators (tf.random.Generator state, which the
    training loop re-seeds each epoch so that resumed training repeats the same masks); weight
    initialisation follows the global seed (``tf_keras.utils.set_random_seed``).
    """
    if pixels < MIN_PIXELS:
        raise ValueError(f"the paper's CNN needs images of at least {MIN_PIXELS}×{MIN_PIXELS} pixels "
                         f"(three valid 3×3 convolutions and 2×2 poolings), got {pixels}")
    conv = dict(kernel_size=3, padding="valid", activation="relu")
    pool = dict(pool_size=2, strides=2)
    return tf_keras.Sequential(
        [
            tf_keras.Input(shape=(bands, pixels, pixels), name="counts"),
            ScaleCounts(scaling, name="scale_counts"),
            layers.Permute((2, 3, 1), name="channels_last"),
            layers.Conv2D(16, **conv, name="conv1"),
            layers.MaxPooling2D(**pool, name="pool1"),
            layers.Conv2D(32, **conv, name="conv2"),
            layers.MaxPooling2D(**pool, name="pool2"),
            layers.Conv2D(64, **conv, name="conv3"),
            layers.MaxPooling2D(**pool, name="pool3"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dropout(DROPOUT, seed=seed, rng_type="stateful", name="dropout1"),
            layers.Dense(200, activation="relu", name="dense200"),
            layers.Dropout(DROPOUT, seed=seed + 1, rng_type="stateful", name="dropout2"),
            layers.Dense(100, activation="relu", name="dense100"),
            layers.Dense(20, activation="relu", name="dense20"),
            layers.Dense(1, name="log_m500c"),
        ],
        name="ntampaka2019_cnn",
    )


def trainable_parameters(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def save_model_atomic(model, path: Path) -> None:
    """Write a ``.keras`` file beside ``path`` and rename it into place (readers never see half a file)."""
    with atomic_path(path, suffix=".partial.keras") as tmp:
        model.save(tmp)


def load_fold_model(workdir, fold: int) -> tf_keras.Sequential:
    """The model fold ``fold`` kept (raw counts in, log10 M500c out), uncompiled, for inference."""
    path = model_path(workdir, fold)
    if not path.exists():
        raise StageError(f"{path}: no trained model for fold {fold}; run `hpcmass train --fold {fold}` "
                         f"with this --workdir first")
    return tf_keras.models.load_model(path, compile=False)


def with_features(model) -> tf_keras.Model:
    """``model`` giving also its penultimate features, the last hidden layer's activations (``dense20``): outputs
    ``[log10 M500c (batch, 1), features (batch, 20)]``, the same weights."""
    return tf_keras.Model(model.inputs, [model.output, model.layers[-2].output])


def _predict(model, counts, batch_size: int) -> list[np.ndarray]:
    """Each output ``(..., width)`` of ``model`` for raw-count images ``(..., bands, P, P)`` (any leading shape),
    dropout off."""
    counts = np.asarray(counts, dtype=np.float32)
    lead, image = counts.shape[:-3], counts.shape[-3:]
    flat = counts.reshape(-1, *image)
    outputs = model.outputs
    if flat.shape[0] == 0:
        return [np.empty((*lead, o.shape[-1]), dtype=np.float32) for o in outputs]
    out = model.predict(flat, batch_size=batch_size, verbose=0)
    return [o.reshape(*lead, o.shape[-1]) for o in (out if len(outputs) > 1 else [out])]


def predict_log_m500c(model, counts, batch_size: int = 256) -> np.ndarray:
    """log10 M500c for raw-count images ``(..., bands, P, P)`` (any leading shape), dropout off."""
    return _predict(model, counts, batch_size)[0][..., 0]


def predict_with_features(model, counts, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """log10 M500c ``(...)`` and penultimate features ``(..., 20)`` for raw-count images ``(..., bands, P, P)``
    by a model of :func:`with_features`."""
    pred, features = _predict(model, counts, batch_size)
    return pred[..., 0], features
