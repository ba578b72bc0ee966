"""Small building blocks shared by the models.

Initializers with the reference's distributions, fp32 norms, dropout with explicit keys, and dense layers that
compute in a chosen dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

LAYER_NORM_EPS = 1e-5  # torch's default, which the reference and the released weights use


def matmul_precision(dtype: jnp.dtype) -> jax.lax.Precision:
    """Full fp32 matmuls when computing in fp32 (the reference disables TF32); the fast default otherwise."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


def uniform_fan_in(fan_in: int) -> nnx.Initializer:
    """Torch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def xavier_uniform(gain: float = 1.0) -> nnx.Initializer:
    """Xavier/Glorot uniform with a gain, as torch defines it (bound = gain * sqrt(6 / (fan_in + fan_out)))."""
    return jax.nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def layer_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, eps: float = LAYER_NORM_EPS) -> jax.Array:
    """Layer norm over the last axis, always in fp32 (as under torch autocast); returns fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


def dropout(x: jax.Array, rate: float, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
    """Inverted dropout with a key drawn from the `dropout` stream; identity when deterministic or rate == 0."""
    if deterministic or rate <= 0.0:
        return x
    if rngs is None:
        raise ValueError("dropout needs `rngs` when deterministic=False")
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class LayerNorm(nnx.Module):
    """Layer norm over the feature axis with torch's eps, computed in fp32."""

    def __init__(self, num_features: int, *, affine: bool = True) -> None:
        self.num_features = num_features
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32)) if affine else None
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32)) if affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalize the last axis; fp32 out."""
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        return layer_norm(x, scale, bias)


class Linear(nnx.Module):
    """Dense layer with fp32 parameters that computes in `dtype` (the autocast equivalent)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        kernel_init: nnx.Initializer | None = None,
        bias_init: nnx.Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        kernel_init = kernel_init or uniform_fan_in(in_features)
        bias_init = bias_init or uniform_fan_in(in_features)
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Return x @ kernel + bias in the compute dtype."""
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype), precision=matmul_precision(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


def transformer_linear_init() -> tuple[nnx.Initializer, nnx.Initializer]:
    """The reference transformer's init for its Linear layers: N(0, 0.02) weights, zero biases."""
    return jax.nn.initializers.normal(0.02), jax.nn.initializers.zeros
