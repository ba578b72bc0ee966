"""Online codebooks: running sums and counts per entry; targets are assigned to the nearest centroid.

All math is in fp32. The state is two arrays stacked over codebooks, `sums` (C, K, D) and `counts` (C, K), kept as
non-trainable NNX variables; the functions below are pure so the train step can update them functionally.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


class CodebookState(nnx.Variable):
    """Non-trainable codebook statistics (never seen by the optimizer)."""


def init_codebook_sums(key: jax.Array, num_codebooks: int, codebook_size: int, dim: int) -> jax.Array:
    """Random codebooks standardized per feature across entries, like the reference (instance norm, eps 1e-5)."""
    x = jax.random.normal(key, (num_codebooks, codebook_size, dim), jnp.float32)
    mean = jnp.mean(x, axis=1, keepdims=True)
    var = jnp.var(x, axis=1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5)


def centroids(sums: jax.Array, counts: jax.Array) -> jax.Array:
    """(C, K, D) centroids = sums / counts."""
    return sums / counts[..., None]


def assign(sums: jax.Array, counts: jax.Array, targets: jax.Array) -> jax.Array:
    """Index of the nearest centroid (squared distance, fp32) for targets (C, ..., D) -> (C, ...) int32."""
    cents = centroids(sums, counts)
    flat = targets.reshape(targets.shape[0], -1, targets.shape[-1]).astype(jnp.float32)
    dots = jnp.einsum("cnd,ckd->cnk", flat, cents, precision=HIGHEST)
    # ||t||^2 does not change the argmin; the reference drops it too.
    distances = jnp.sum(jnp.square(cents), axis=-1)[:, None, :] - 2.0 * dots
    return jnp.argmin(distances, axis=-1).reshape(targets.shape[:-1]).astype(jnp.int32)


def assignment_statistics(
    labels: jax.Array, targets: jax.Array, weights: jax.Array, codebook_size: int
) -> tuple[jax.Array, jax.Array]:
    """Per entry: how many weighted frames were assigned (C, K) and the sum of their targets (C, K, D).

    `weights` (...) selects the frames that count (the masked frames, 1.0) so no dynamic gather is needed.
    """
    onehot = jax.nn.one_hot(labels, codebook_size, dtype=jnp.float32) * weights[None, ..., None].astype(jnp.float32)
    onehot = onehot.reshape(onehot.shape[0], -1, codebook_size)
    flat = targets.reshape(targets.shape[0], -1, targets.shape[-1]).astype(jnp.float32)
    counts = jnp.sum(onehot, axis=1)
    sums = jnp.einsum("cnk,cnd->ckd", onehot, flat, precision=HIGHEST)
    return counts, sums


def ema_update(
    sums: jax.Array, counts: jax.Array, new_counts: jax.Array, new_sums: jax.Array, decay: float
) -> tuple[jax.Array, jax.Array]:
    """Exponential moving average of the statistics; entries that got no assignment are left as they are."""
    if decay >= 1.0:
        return sums, counts
    alpha = jnp.where(new_counts != 0, jnp.float32(decay), jnp.float32(1.0))
    counts = alpha * counts + (1 - alpha) * new_counts
    sums = alpha[..., None] * sums + (1 - alpha)[..., None] * new_sums
    return sums, counts


class Codebooks(nnx.Module):
    """Holds the stacked codebook statistics of a model."""

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, *, rngs: nnx.Rngs) -> None:
        self.codebook_size = codebook_size
        self.sums = CodebookState(init_codebook_sums(rngs.params(), num_codebooks, codebook_size, dim))
        self.counts = CodebookState(jnp.ones((num_codebooks, codebook_size), jnp.float32))

    def assign(self, targets: jax.Array) -> jax.Array:
        """Nearest entry of each codebook for targets (C, ..., D)."""
        return assign(self.sums[...], self.counts[...], targets)
