"""What a model computes for one layer over a padded batch: its features, or the units of its codebook.

Extraction, evaluation, the end-of-training report and the Python API choose a layer's output here. Each output
is a function `(model, waveforms (B, S), lengths (B,)) -> (B, T, ...)`; the same function object is returned for
the same choice, so that its compiled form is reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.errors import UserError
from spidr_jax.models.ssl import DinoSR

# (model, waveforms (B, S), lengths (B,)) -> a batch-first array (B, T, ...)
OutputFunction = Callable[[DinoSR, jax.Array, jax.Array], jax.Array]


class LayerChoiceError(UserError, ValueError):
    """A layer the model does not have, or without a codebook where units are asked for."""


def check_layer(cfg: DinoSRConfig, layer: int, *, units: bool) -> None:
    """Raise LayerChoiceError naming the valid layers."""
    layers = cfg.codebook_layers
    if units and layer not in layers:
        raise LayerChoiceError(
            f"--layer {layer} has no codebook predictions; units exist for layers {layers[0]}..{layers[-1]}"
        )
    if not 1 <= layer <= cfg.encoder_num_layers:
        raise LayerChoiceError(f"--layer must be between 1 and {cfg.encoder_num_layers}, got {layer}")


@functools.cache
def features_at(layer: int, *, before_residual: bool = True) -> OutputFunction:
    """Student features of a 1-based layer, (B, T, D) float32."""

    def output(model: DinoSR, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
        layers = model.get_intermediate_outputs(waveforms, lengths, num_layers=layer, before_residual=before_residual)
        return layers[layer - 1].astype(np.float32)

    return output


def kmeans_units_at(layer: int, centroids: np.ndarray) -> OutputFunction:
    """Units of a layer's features: the nearest of `centroids` (K, D) in squared distance, (B, T) int32.

    The distances are computed in float32 at full precision, like the k-means fit's assignments.
    """
    table = jnp.asarray(centroids, jnp.float32)
    features = features_at(layer)

    def output(model: DinoSR, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
        x = features(model, waveforms, lengths)
        products = jnp.einsum("btd,kd->btk", x, table, precision=jax.lax.Precision.HIGHEST)
        distances = jnp.sum(table * table, axis=-1) - 2 * products  # |x|^2 is the same for every centroid
        return jnp.argmin(distances, axis=-1).astype(jnp.int32)

    return output


def units_at(layer: int, cfg: DinoSRConfig) -> OutputFunction:
    """Units of a 1-based layer that has a codebook, (B, T) int32."""
    return units_of_head(cfg.codebook_layers.index(layer))


@functools.cache
def units_of_head(head: int) -> OutputFunction:
    """Units of the codebook head `head` (0-based), (B, T) int32."""

    def output(model: DinoSR, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
        return model.units(waveforms, lengths)[head]

    return output


def probabilities_at(layer: int, cfg: DinoSRConfig) -> OutputFunction:
    """Codebook probabilities of a 1-based layer that has a codebook, (B, T, K) float32."""
    return probabilities_of_head(cfg.codebook_layers.index(layer))


@functools.cache
def probabilities_of_head(head: int) -> OutputFunction:
    """Probabilities of the codebook head `head` (0-based), (B, T, K) float32."""

    def output(model: DinoSR, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
        return model.get_codebooks(waveforms, lengths)[model.config.codebook_layers[head] - 1].astype(jnp.float32)

    return output


def units_of_codebooks(model: DinoSR, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
    """Units of every codebook layer, (B, T, C) int32 (in the order of `codebook_layers`)."""
    return model.units(waveforms, lengths).transpose(1, 2, 0)
