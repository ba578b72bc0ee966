"""Prediction heads: one Linear + log-softmax per codebook, stored stacked as (C, D, K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from spidr_jax.models.layers import matmul_precision, uniform_fan_in


class PredictionHeads(nnx.Module):
    """Stacked heads; log-probabilities come out in fp32."""

    def __init__(
        self, num_heads: int, embed_dim: int, codebook_size: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        init = uniform_fan_in(embed_dim)  # torch's default Linear init: the reference leaves the heads at it
        self.dtype = dtype
        self.kernel = nnx.Param(init(rngs.params(), (num_heads, embed_dim, codebook_size)))
        self.bias = nnx.Param(init(rngs.params(), (num_heads, codebook_size)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (C, B, T, D), one input per head, or (B, T, D) shared by all heads -> (C, B, T, K) log-probs."""
        equation = "cbtd,cdk->cbtk" if x.ndim == 4 else "btd,cdk->cbtk"
        kernel = self.kernel[...].astype(self.dtype)
        logits = jnp.einsum(equation, x.astype(self.dtype), kernel, precision=matmul_precision(self.dtype))
        logits = logits + self.bias[...].astype(self.dtype)[:, None, None, :]
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
