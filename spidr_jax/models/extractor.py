"""Convolutional feature extractor (waveform -> 50 Hz frames) and the projection to the encoder width."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spidr_jax.models.chunked_extractor import ExtractorChunks, chunked_extract
from spidr_jax.models.layers import LAYER_NORM_EPS, LayerNorm, Linear, gelu, matmul_precision

ConvLayerSpec = tuple[int, int, int]  # (out_channels, kernel_size, stride)


def conv_output_lengths(lengths: jax.Array | np.ndarray | int, conv_layers: Sequence[ConvLayerSpec]):  # noqa: ANN201
    """Frames produced from `lengths` samples: only frames whose receptive field lies inside the audio."""
    xp = jnp if isinstance(lengths, jax.Array) else np
    out = xp.asarray(lengths)
    for _, kernel, stride in conv_layers:
        out = xp.maximum((out - kernel) // stride + 1, 0)
    return out


def length_mask(lengths: jax.Array, max_length: int) -> jax.Array:
    """(batch, max_length) boolean mask, True on valid positions."""
    return jnp.arange(max_length)[None, :] < lengths[:, None]


class ChannelGroupNorm(nnx.Module):
    """GroupNorm with one group per channel: each channel normalized over time (valid frames only), fp32."""

    def __init__(self, channels: int) -> None:
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array, frame_mask: jax.Array | None) -> jax.Array:
        """(B, T, C) features -> normalized per channel over time."""
        x = x.astype(jnp.float32)
        if frame_mask is None:
            mean = jnp.mean(x, axis=1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
        else:
            # Statistics over the valid frames, so an example padded in a batch gives what it gives alone.
            weight = frame_mask[:, :, None].astype(jnp.float32)
            count = jnp.maximum(jnp.sum(weight, axis=1, keepdims=True), 1.0)
            mean = jnp.sum(x * weight, axis=1, keepdims=True) / count
            var = jnp.sum(jnp.square(x - mean) * weight, axis=1, keepdims=True) / count
        return self.normalize(x, mean, var)

    def normalize(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        """Normalize (B, T, C) with given per-channel statistics (B, 1, C) (computed elsewhere on long inputs)."""
        x = x.astype(jnp.float32)
        return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * self.scale[...] + self.bias[...]


class ConvBlock(nnx.Module):
    """Strided 1-D convolution, optional norm, GELU. Kaiming-normal init like the reference."""

    def __init__(
        self, in_channels: int, spec: ConvLayerSpec, norm: str | None, *, bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs
    ) -> None:
        out_channels, kernel, stride = spec
        fan_in = in_channels * kernel
        self.stride, self.dtype = stride, dtype
        init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        self.kernel = nnx.Param(init(rngs.params(), (kernel, in_channels, out_channels), jnp.float32))
        bound = 1.0 / np.sqrt(fan_in)
        self.bias = (
            nnx.Param(jax.random.uniform(rngs.params(), (out_channels,), jnp.float32, -bound, bound)) if bias else None
        )
        self.layer_norm = LayerNorm(out_channels) if norm == "layer_norm" else None
        self.group_norm = ChannelGroupNorm(out_channels) if norm == "group_norm" else None

    def __call__(self, x: jax.Array, frame_mask: jax.Array | None) -> jax.Array:
        """(B, T_in, C_in) -> (B, T_out, C_out)."""
        return self.activate(self.convolve(x), frame_mask)

    def convolve(self, x: jax.Array) -> jax.Array:
        """The convolution (and bias) alone: (B, T_in, C_in) -> (B, T_out, C_out)."""
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(self.stride,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
            precision=matmul_precision(self.dtype),
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y

    def activate(
        self, y: jax.Array, frame_mask: jax.Array | None, statistics: tuple[jax.Array, jax.Array] | None = None
    ) -> jax.Array:
        """Norm and GELU of a convolution's output; `statistics` (mean, var) replace the group norm's own."""
        if self.layer_norm is not None:
            y = self.layer_norm(y)
        if self.group_norm is not None:
            y = self.group_norm(y, frame_mask) if statistics is None else self.group_norm.normalize(y, *statistics)
        return gelu(y)


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
