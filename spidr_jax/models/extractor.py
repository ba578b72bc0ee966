"""Convolutional feature extractor (waveform -> 50 Hz frames) and the projection to the encoder width."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spidr_jax.models.chunked_extractor import ExtractorChunks, chunked_extract
from spidr_jax.models.conv_block import ConvBlock, ConvLayerSpec
from spidr_jax.models.layers import LayerNorm, Linear


def conv_output_lengths(lengths: jax.Array | np.ndarray | int, conv_layers: Sequence[ConvLayerSpec]):  # noqa: ANN201
    """Frames produced from `lengths` samples: only frames whose receptive field lies inside the audio."""
    xp = jnp if isinstance(lengths, jax.Array) else np
    out = xp.asarray(lengths)
    for _, kernel, stride in conv_layers:
        out = xp.maximum((out - kernel) // stride + 1, 0)
    return out


def receptive_field(conv_layers: Sequence[ConvLayerSpec]) -> int:
    """The fewest samples that give one frame: the receptive field of one output frame."""
    samples, step = 1, 1
    for _, kernel, stride in conv_layers:
        samples += (kernel - 1) * step
        step *= stride
    return samples


def length_mask(lengths: jax.Array, max_length: int) -> jax.Array:
    """(batch, max_length) boolean mask, True on valid positions."""
    return jnp.arange(max_length)[None, :] < lengths[:, None]


class FeatureExtractor(nnx.Module):
    """Stack of ConvBlocks: (batch, samples) waveforms -> (batch, frames, channels) features.

    Above `chunks.min_frames` output frames the stack runs over overlapping chunks of the waveform (exact, see
    spidr_jax.models.chunked_extractor), so its memory does not grow with the length of the audio.
    """

    def __init__(
        self,
        conv_layers: Sequence[ConvLayerSpec],
        mode: str,
        *,
        conv_bias: bool,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.conv_specs = tuple(tuple(spec) for spec in conv_layers)
        blocks, in_channels = [], 1
        for i, spec in enumerate(self.conv_specs):
            norm = "layer_norm" if mode == "layer_norm" else ("group_norm" if i == 0 else None)
            blocks.append(ConvBlock(in_channels, spec, norm, bias=conv_bias, dtype=dtype, rngs=rngs))
            in_channels = spec[0]
        self.conv_layers = nnx.List(blocks)
        self.chunks = ExtractorChunks()

    def __call__(self, waveforms: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """(B, S) waveforms (zero-padded past `lengths`) -> (B, T, C) features."""
        if self.chunks.applies(int(conv_output_lengths(waveforms.shape[1], self.conv_specs))):
            return chunked_extract(self.conv_specs, list(self.conv_layers), waveforms, lengths, self.chunks)
        x = waveforms[:, :, None]
        lens = lengths
        for spec, block in zip(self.conv_specs, self.conv_layers, strict=True):
            frame_mask = None
            if lens is not None:
                lens = conv_output_lengths(lens, [spec])
                frames = (x.shape[1] - spec[1]) // spec[2] + 1
                frame_mask = length_mask(lens, frames)
            x = block(x, frame_mask)
        return x


class FeatureProjection(nnx.Module):
    """LayerNorm then Linear from the extractor's channels to the encoder width."""

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.layer_norm = LayerNorm(in_features)
        self.projection = Linear(in_features, out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, C) extractor features -> (B, T, D) encoder inputs."""
        return self.projection(self.layer_norm(x))
