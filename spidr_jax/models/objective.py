"""The masked-prediction objective on dense masks: cross-entropy against codebook targets, and perplexities.

Sums, not means, are returned so the caller can divide by the masked-frame count of the whole global batch
(identical for any number of devices). Everything is fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ObjectiveSums(NamedTuple):
    """Sums over the masked frames of a batch."""

    loss: jax.Array  # sum over masked frames of (sum over codebooks of cross-entropy) / C
    count: jax.Array  # number of masked frames
    target_hist: jax.Array  # (C, K) one-hot target counts
    pred_hist: jax.Array  # (C, K) summed predicted probabilities


def objective_sums(log_probs: jax.Array, labels: jax.Array, mask: jax.Array) -> ObjectiveSums:
    """log_probs (C, B, T, K), target labels (C, B, T), mask (B, T) bool -> masked sums."""
    num_codebooks, codebook_size = log_probs.shape[0], log_probs.shape[-1]
    weights = mask.astype(jnp.float32)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]  # (C, B, T)
    per_frame = -jnp.sum(picked, axis=0) / num_codebooks
    onehot = jax.nn.one_hot(labels, codebook_size, dtype=jnp.float32)
    return ObjectiveSums(
        loss=jnp.sum(per_frame * weights),
        count=jnp.sum(weights),
        target_hist=jnp.einsum("cbtk,bt->ck", onehot, weights),
        pred_hist=jnp.einsum("cbtk,bt->ck", jnp.exp(log_probs), weights),
    )


def perplexity(hist: jax.Array, count: jax.Array) -> jax.Array:
    """Mean over codebooks of exp2(entropy of the mean distribution), as the reference computes it."""
    mean = hist / count
    return jnp.mean(jnp.exp2(-jnp.sum(mean * jnp.log2(mean + 1e-8), axis=-1)))


class ObjectiveMetrics(NamedTuple):
    """Loss per masked frame and the two perplexities."""

    loss: jax.Array
    target_ppl: jax.Array
    pred_ppl: jax.Array


def objective_metrics(sums: ObjectiveSums) -> ObjectiveMetrics:
    """Means from (globally reduced) sums."""
    count = jnp.maximum(sums.count, 1.0)
    return ObjectiveMetrics(
        loss=sums.loss / count,
        target_ppl=perplexity(sums.target_hist, count),
        pred_ppl=perplexity(sums.pred_hist, count),
    )
