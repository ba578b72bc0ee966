"""Frame distances of ABX, computed for whole tiles of frames at once.

A tile is every frame of one chunk against every frame of another, from one matrix product.

- ``angular`` (ZeroSpeech's default for features): ``arccos(x . y) / pi`` of unit vectors, in [0, 1]. Frames are
  normalised once, beforehand; an all-zero frame becomes the uniform unit vector, as in ZeroSpeech and fastabx.
- ``euclidean``: ``||x - y||``.
- ``kl_symmetric``: the symmetrised Kullback-Leibler divergence of probability vectors (codebook probabilities),
  ``(KL(p||q) + KL(q||p)) / 2`` with ``1e-6`` added inside the logarithms.
- ``identical``: 0 where two units are equal, 1 elsewhere; for discrete units, stored as one integer per frame. It
  is the angular distance of one-hot vectors up to a factor 2, which changes no ABX comparison.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DISTANCES", "finish_distances", "prepare_frames", "prepare_frames_into", "tile_distances"]

DISTANCES = ("angular", "euclidean", "kl_symmetric", "identical")
_KL_EPSILON = 1e-6


def prepare_frames(frames: np.ndarray, distance: str) -> np.ndarray:
    """Frames as the tile kernel reads them: unit float32 rows for ``angular``, int32 units for ``identical``."""
    frames = np.asarray(frames)
    out = np.empty(frames.shape, np.int32 if distance == "identical" else np.float32)
    prepare_frames_into(out, frames, distance)
    return out


def prepare_frames_into(out: np.ndarray, frames: np.ndarray, distance: str) -> None:
    """``prepare_frames`` written into ``out`` (int32 or float32, the shape of ``frames``), in place."""
    out[...] = frames
    if distance != "angular":
        return
    norms = np.sqrt(np.einsum("fd,fd->f", out, out))
    zero = norms == 0
    norms[zero] = 1.0
    out /= norms[:, None]
    out[zero] = 1.0 / math.sqrt(out.shape[1])


def tile_distances(distance: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """(R, F, G) distances between the frames of (R, F[, D]) ``x`` and (R, G[, D]) ``y``, tile by tile.

    For ``angular`` these are cosines, which ``finish_distances`` turns into distances: the arc cosine costs as
    much as the matrix product, and only the cells that a DTW reads need it.
    """
    if distance == "identical":
        return (x[:, :, None] != y[:, None, :]).astype(jnp.float32)
    dots = jnp.einsum("rfd,rgd->rfg", x, y, precision=jax.lax.Precision.HIGHEST)
    if distance == "angular":
        return dots
    if distance == "euclidean":
        squares = jnp.sum(x * x, axis=-1)[:, :, None] + jnp.sum(y * y, axis=-1)[:, None, :]
        return jnp.sqrt(jnp.maximum(squares - 2.0 * dots, 0.0))
    if distance == "kl_symmetric":
        log_x, log_y = jnp.log(x + _KL_EPSILON), jnp.log(y + _KL_EPSILON)
        # Centring each row's logarithms changes nothing for probability vectors and keeps float32 precise.
        log_x = log_x - jnp.mean(log_x, axis=-1, keepdims=True)
        log_y = log_y - jnp.mean(log_y, axis=-1, keepdims=True)
        self_x = jnp.sum(x * log_x, axis=-1)[:, :, None]
        self_y = jnp.sum(y * log_y, axis=-1)[:, None, :]
        cross = jnp.einsum("rfd,rgd->rfg", x, log_y) + jnp.einsum("rfd,rgd->rfg", log_x, y)
        return 0.5 * (self_x + self_y - cross)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def finish_distances(distance: str, values: jax.Array) -> jax.Array:
    """Distances from the values of ``tile_distances``: ``arccos(cosine) / pi`` for ``angular``, else as they are."""
    if distance == "angular":
        return jnp.arccos(jnp.clip(values, -1.0, 1.0)) / jnp.pi
    return values
