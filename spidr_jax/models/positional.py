"""Convolutional positional embedding placed at the start of the transformer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from spidr_jax.models.gelu import gelu
from spidr_jax.models.grouped_conv import grouped_conv1d
from spidr_jax.models.layers import layer_norm, matmul_precision, uniform_fan_in


class ConvPositionalEmbedding(nnx.Module):
    """`depth` grouped 'same' convolutions, each followed by a non-affine channel LayerNorm and GELU.

    The per-layer kernel is max(3, kernel // depth). With an even kernel the reference pads k//2 on both sides and
    drops the last frame; padding (k//2, k//2 - 1) gives exactly those frames without computing the extra one.
    Padding frames are zeroed before each convolution and at the end.
    """

    def __init__(
        self, embed_dim: int, kernel_size: int, groups: int, depth: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ) -> None:
        self.embed_dim, self.groups, self.dtype = embed_dim, groups, dtype
        self.layer_kernel_size = max(3, kernel_size // depth)
        k = self.layer_kernel_size
        self.padding = (k // 2, k // 2 - (1 if k % 2 == 0 else 0))
        init = uniform_fan_in((embed_dim // groups) * k)
        self.kernels = nnx.List(
            [nnx.Param(init(rngs.params(), (k, embed_dim // groups, embed_dim))) for _ in range(depth)]
        )
        self.biases = nnx.List([nnx.Param(init(rngs.params(), (embed_dim,))) for _ in range(depth)])

    def __call__(self, x: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
        """(B, T, D) -> positional embedding (B, T, D), zero on padding frames.

        Traced under a mesh with a 'data' axis of several devices (the training step), each device convolves its own
        rows: left to itself, XLA's GPU partitioner gathers the whole batch onto every device before each grouped
        convolution (the TPU one does not).
        """
        weights = ([kernel[...] for kernel in self.kernels], [bias[...] for bias in self.biases])
        mesh = jax.sharding.get_abstract_mesh()
        if "data" not in mesh.axis_names or mesh.shape["data"] == 1:
            return self._embed(x, frame_mask, weights)
        rows = PartitionSpec("data")
        in_specs = (rows, rows, PartitionSpec())  # the weights on every device (their gradients summed over 'data')
        return jax.shard_map(self._embed, in_specs=in_specs, out_specs=rows)(x, frame_mask, weights)

    def _embed(
        self, x: jax.Array, frame_mask: jax.Array | None, weights: tuple[list[jax.Array], list[jax.Array]]
    ) -> jax.Array:
        mask = None if frame_mask is None else frame_mask[:, :, None]
        for kernel, bias in zip(*weights, strict=True):
            if mask is not None:
                x = jnp.where(mask, x, 0)
            x = grouped_conv1d(
                x.astype(self.dtype), kernel.astype(self.dtype), self.groups, self.padding, matmul_precision(self.dtype)
            )
            x = gelu(layer_norm(x + bias.astype(self.dtype), None, None))
        if mask is not None:
            x = jnp.where(mask, x, 0)
        return x
