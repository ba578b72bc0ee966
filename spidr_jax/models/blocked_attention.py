"""Exact self attention in blocks, for inputs too long for the (frames x frames) attention matrix.

The softmax is computed online: for each block of queries, a scan over blocks of keys keeps the running maximum
of the logits, the running sum of their exponentials and the running weighted sum of the values, rescaling the
last two whenever the maximum grows. Memory is (batch, heads, query block, key block) instead of (batch, heads,
frames, frames); the result equals the softmax attention up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from spidr_jax.models.layers import matmul_precision


@dataclass(frozen=True)
class TransformerBlocks:
    """When and how the transformer is blocked on long inputs (above `min_frames` frames).

    Attention then runs in (query_block, key_block) tiles and the feed-forward `frame_block` frames at a time.
    """

    min_frames: int = 2048  # the full matrix below: 12 heads x 2048^2 x 4 bytes = 200 MB per example
    query_block: int = 256  # tiles of 12 x 256 x 512 x 4 bytes = 6 MB per example; faster on CPU than larger
    key_block: int = 512
    frame_block: int = 2048  # the feed-forward's hidden activations: 2048 x 3072 x 4 bytes = 25 MB

    def applies(self, frames: int) -> bool:
        """Whether inputs of `frames` frames take the blocked path."""
        return frames > self.min_frames


def map_in_place(function: Callable[[jax.Array], jax.Array], blocks: jax.Array) -> jax.Array:
    """`function` applied to each block of `blocks` (N, ...), each result (of the block's shape) written over it.

    Unlike `lax.map`, no output buffer is allocated: a fresh one has no data dependency, so the scheduler may
    create those of every layer up front and keep them all alive.
    """

    def step(index: jax.Array, values: jax.Array) -> jax.Array:
        result = function(jax.lax.dynamic_index_in_dim(values, index, keepdims=False))
        return jax.lax.dynamic_update_index_in_dim(values, result.astype(values.dtype), index, 0)

    return jax.lax.fori_loop(0, blocks.shape[0], step, blocks)


def map_frames(function: Callable[[jax.Array], jax.Array], x: jax.Array, block: int) -> jax.Array:
    """A per-frame `function` of (B, T, D) -> (B, T, D), computed `block` frames at a time."""
    batch, frames, dim = x.shape
    count = math.ceil(frames / block)
    tiles = jnp.moveaxis(
        jnp.pad(x, ((0, 0), (0, count * block - frames), (0, 0))).reshape(batch, count, block, dim), 1, 0
    )
    out_dtype = jax.eval_shape(function, tiles[0]).dtype  # the blocks are written over the input's dtype
    out = jnp.moveaxis(map_in_place(function, tiles), 0, 1)
    return out.reshape(batch, count * block, dim)[:, :frames].astype(out_dtype)


def _blocks(x: jax.Array, size: int, fill: object = 0) -> jax.Array:
    """(B, H, T, ...) -> (T' / size, B, H, size, ...), T padded to a multiple of `size` with `fill`."""
    frames = x.shape[2]
    count = math.ceil(frames / size)
    pad = [(0, 0)] * x.ndim
    pad[2] = (0, count * size - frames)
    x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(*x.shape[:2], count, size, *x.shape[3:])
    return jnp.moveaxis(x, 2, 0)


def blocked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, blocks: TransformerBlocks
) -> jax.Array:
    """Softmax attention of (B, T, H, D) queries, keys and values; `key_mask` (B, T) marks valid keys.

    Returns (B, T, H, D) in the values' dtype. A query whose keys are all masked gets zeros.
    """
    batch, frames, heads, head_dim = q.shape
    precision = matmul_precision(q.dtype)
    scale = 1.0 / math.sqrt(head_dim)
    # Heads before time, so each tile is one batched matmul over (batch, heads) without transposes inside.
    q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
    if key_mask is None:
        key_mask = jnp.ones((batch, frames), bool)
    key_mask = jnp.broadcast_to(key_mask[:, None, :], (batch, heads, frames))
    key_tiles = (_blocks(k, blocks.key_block), _blocks(v, blocks.key_block), _blocks(key_mask, blocks.key_block))
    lowest = jnp.finfo(jnp.float32).min

    def attend(query: jax.Array) -> jax.Array:
        """One (B, H, query_block, D) block of queries against every key block."""
        shape = query.shape[:3]
        init = (
            jnp.full(shape, lowest, jnp.float32),  # running max of the logits
            jnp.zeros(shape, jnp.float32),  # running sum of exp(logit - max)
            jnp.zeros((*shape, head_dim), jnp.float32),  # running sum of exp(logit - max) * value
        )

        def step(
            carry: tuple[jax.Array, jax.Array, jax.Array], tile: tuple[jax.Array, jax.Array, jax.Array]
        ) -> tuple[tuple[jax.Array, jax.Array, jax.Array], None]:
            running_max, total, weighted = carry
            keys, values, valid = tile
            logits = jnp.einsum("bhqd,bhkd->bhqk", query, keys, precision=precision, preferred_element_type=jnp.float32)
            logits = jnp.where(valid[:, :, None, :], logits * scale, lowest)
            new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
            # Masked keys get weight 0 explicitly: while every key so far is masked, logit - max is 0, not -inf.
            weights = jnp.where(valid[:, :, None, :], jnp.exp(logits - new_max[..., None]), 0.0)
            rescale = jnp.exp(running_max - new_max)
            total = total * rescale + jnp.sum(weights, axis=-1)
            update = jnp.einsum(
                "bhqk,bhkd->bhqd",
                weights.astype(values.dtype),
                values,
                precision=precision,
                preferred_element_type=jnp.float32,
            )
            return (new_max, total, weighted * rescale[..., None] + update), None

        (_, total, weighted), _ = jax.lax.scan(step, init, key_tiles)
        return (weighted / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)[..., None]).astype(v.dtype)

    out = map_in_place(attend, _blocks(q, blocks.query_block))  # (num_query_blocks, B, H, query_block, D)
    out = jnp.moveaxis(out, 0, 2).reshape(batch, heads, -1, head_dim)[:, :, :frames]
    return jnp.transpose(out, (0, 2, 1, 3))
