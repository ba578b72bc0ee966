"""One layer of the convolutional feature extractor: strided convolution, optional norm, GELU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spidr_jax.models.gelu import gelu
from spidr_jax.models.layers import LAYER_NORM_EPS, LayerNorm, matmul_precision

ConvLayerSpec = tuple[int, int, int]  # (out_channels, kernel_size, stride)


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
