"""The convolutional feature extractor over overlapping chunks of the waveform, with exactly the frames of one pass.

Output frame t of a stack of VALID strided convolutions reads samples [t * stride, t * stride + field), where
`stride` is the product of the strides and `field` the receptive field. A chunk of F frames starting at frame a
therefore needs samples [a * stride, (a + F - 1) * stride + field): since a * stride is a multiple of every
layer's cumulative stride, each layer's frame grid inside the chunk coincides with the grid of the whole input,
and the chunk's frames are those of the whole input, bit for bit up to the convolution's summation order. Layer
norms over channels are per frame, so they chunk too.

The group-norm mode normalizes layer 0 over time, with per-channel statistics of the whole file. They are
computed first, in two chunked passes over layer 0's convolution (the mean, then the mean squared deviation from
it, over the valid frames, as the unchunked norm computes them); the chunks then normalize with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from spidr_jax.models.conv_block import ConvBlock


@dataclass(frozen=True)
class ExtractorChunks:
    """When and how the extractor runs in chunks: above `min_frames` output frames, `chunk_frames` at a time."""

    min_frames: int = 3000  # 60 s at 50 Hz; below, one pass (its first layer: 512 x 192k x 4 bytes = 400 MB)
    chunk_frames: int = 500  # 10 s of audio per chunk: the first layer's output is 512 x 32k x 4 bytes = 65 MB

    def applies(self, frames: int) -> bool:
        """Whether inputs with `frames` output frames take the chunked path."""
        return frames > self.min_frames


def receptive_field(specs: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    """(receptive field in samples, total stride) of a stack of (channels, kernel, stride) convolutions."""
    field, stride = 1, 1
    for _, kernel, layer_stride in specs:
        field += (kernel - 1) * stride
        stride *= layer_stride
    return field, stride


def _windows(waveforms: jax.Array, count: int, step: int, span: int) -> tuple[jax.Array, jax.Array]:
    """The waveforms zero-padded so that `count` windows of `span` samples every `step` fit, and their starts."""
    needed = (count - 1) * step + span
    padded = jnp.pad(waveforms, ((0, 0), (0, max(0, needed - waveforms.shape[1]))))
    return padded, jnp.arange(count) * step


def layer0_statistics(
    block: ConvBlock,
    spec: tuple[int, int, int],
    waveforms: jax.Array,
    lengths: jax.Array | None,
    chunk_frames: int,
) -> tuple[jax.Array, jax.Array]:
    """Per-example, per-channel (mean, var) (B, 1, C) of layer 0's convolution over its valid frames."""
    _, kernel, stride = spec
    frames = (waveforms.shape[1] - kernel) // stride + 1
    valid = (
        jnp.full((waveforms.shape[0],), frames) if lengths is None else jnp.maximum((lengths - kernel) // stride + 1, 0)
    )
    count = math.ceil(frames / chunk_frames)
    padded, starts = _windows(waveforms, count, chunk_frames * stride, (chunk_frames - 1) * stride + kernel)
    span = (chunk_frames - 1) * stride + kernel
    denominator = jnp.maximum(valid, 1).astype(jnp.float32)[:, None, None]

    def chunk(index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Layer 0's output on chunk `index` (B, F, C) fp32, and which of its frames are valid (B, F, 1)."""
        x = jax.lax.dynamic_slice_in_dim(padded, starts[index], span, axis=1)[:, :, None]
        position = index * chunk_frames + jnp.arange(chunk_frames)
        return block.convolve(x).astype(jnp.float32), (position[None, :] < valid[:, None])[:, :, None]

    def chunk_sum(index: jax.Array) -> jax.Array:
        y, weight = chunk(index)
        return jnp.sum(jnp.where(weight, y, 0.0), axis=1)

    mean = jnp.sum(jax.lax.map(chunk_sum, jnp.arange(count)), axis=0)[:, None, :] / denominator

    def chunk_squares(index: jax.Array) -> jax.Array:
        y, weight = chunk(index)
        return jnp.sum(jnp.where(weight, jnp.square(y - mean), 0.0), axis=1)

    var = jnp.sum(jax.lax.map(chunk_squares, jnp.arange(count)), axis=0)[:, None, :] / denominator
    return mean, var


def chunked_extract(
    specs: Sequence[tuple[int, int, int]],
    blocks: Sequence[ConvBlock],
    waveforms: jax.Array,
    lengths: jax.Array | None,
    chunks: ExtractorChunks,
) -> jax.Array:
    """(B, S) waveforms -> (B, T, C) features of the extractor `blocks`, computed `chunks.chunk_frames` at a time."""
    field, stride = receptive_field(specs)
    frames = max((waveforms.shape[1] - field) // stride + 1, 0)
    frames_per_chunk = chunks.chunk_frames
    count = math.ceil(frames / frames_per_chunk)
    span = (frames_per_chunk - 1) * stride + field
    padded, starts = _windows(waveforms, count, frames_per_chunk * stride, span)
    statistics = None
    if blocks[0].group_norm is not None:
        # Layer 0's chunks are the main chunks' first layer: stride / stride_0 of its frames per output frame.
        layer0_chunk = frames_per_chunk * stride // specs[0][2]
        statistics = layer0_statistics(blocks[0], specs[0], waveforms, lengths, layer0_chunk)

    def chunk(start: jax.Array) -> jax.Array:
        x = jax.lax.dynamic_slice_in_dim(padded, start, span, axis=1)[:, :, None]
        for i, block in enumerate(blocks):
            x = block.activate(block.convolve(x), None, statistics if i == 0 else None)
        return x

    out = jax.lax.map(chunk, starts)  # (count, B, F, C)
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], -1, out.shape[-1])[:, :frames]
