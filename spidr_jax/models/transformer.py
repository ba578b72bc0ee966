"""Transformer encoder (wav2vec2 style) with convolutional positional embedding and intermediate outputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.models.attention_kernel import AttentionKernel
from spidr_jax.models.blocked_attention import TransformerBlocks, blocked_attention, map_frames
from spidr_jax.models.gelu import gelu
from spidr_jax.models.layer_stack import LayerExecution, run_layer_stack
from spidr_jax.models.layers import LayerNorm, Linear, dropout, transformer_linear_init, xavier_uniform
from spidr_jax.models.positional import ConvPositionalEmbedding


class SelfAttention(nnx.Module):
    """Multi-head self attention with a fused qkv projection; blocked (exact, bounded memory) on long inputs.

    `blocks` says above how many frames inference switches to the blocked computation; training with attention
    dropout keeps the materialized probabilities.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, *, qkv_bias: bool, dropout_rate: float, dtype: jnp.dtype, rngs: nnx.Rngs
    ) -> None:
        self.embed_dim, self.num_heads, self.dropout_rate, self.dtype = embed_dim, num_heads, dropout_rate, dtype
        self.blocks = TransformerBlocks()
        self.implementation: AttentionKernel = "xla"  # where no dropout applies (models.attention_kernel)
        zeros = jax.nn.initializers.zeros
        self.qkv = Linear(
            embed_dim,
            3 * embed_dim,
            use_bias=qkv_bias,
            kernel_init=xavier_uniform(1 / math.sqrt(2)),
            bias_init=zeros,
            dtype=dtype,
            rngs=rngs,
        )
        self.proj = Linear(embed_dim, embed_dim, kernel_init=xavier_uniform(), bias_init=zeros, dtype=dtype, rngs=rngs)

    def __call__(
        self, x: jax.Array, key_mask: jax.Array | None, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """(B, T, D) -> (B, T, D); `key_mask` (B, T) marks valid frames."""
        batch, frames, _ = x.shape
        head_dim = self.embed_dim // self.num_heads
        q, k, v = jnp.split(self.qkv(x).reshape(batch, frames, 3, self.num_heads, head_dim), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (batch, frames, heads, head_dim)
        if (deterministic or self.dropout_rate <= 0) and self.blocks.applies(frames):
            out = blocked_attention(q, k, v, key_mask, self.blocks)
        elif deterministic or self.dropout_rate <= 0:
            # key_mask is a length mask (valid frames first): the kernels take the lengths.
            lengths = None if key_mask is None else jnp.sum(key_mask, axis=1, dtype=jnp.int32)
            out = jax.nn.dot_product_attention(
                q, k, v, key_value_seq_lengths=lengths, implementation=self.implementation
            )
        else:
            out = self._attention_with_dropout(q, k, v, key_mask, rngs)
        return self.proj(out.reshape(batch, frames, self.embed_dim))

    def _attention_with_dropout(
        self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, rngs: nnx.Rngs | None
    ) -> jax.Array:
        # Dropout on the attention probabilities needs them materialized: no fused kernel JAX exposes offers it.
        scale = 1.0 / math.sqrt(q.shape[-1])
        logits = attention_logits(q, k) * scale
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = dropout(jax.nn.softmax(logits, axis=-1), self.dropout_rate, deterministic=False, rngs=rngs)
        return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def attention_logits(q: jax.Array, k: jax.Array) -> jax.Array:
    """The attention logits q k^T per head, (B, T, H, d) x (B, S, H, d) -> (B, H, T, S), in float32 (for the softmax).

    In a reduced precision (bfloat16 training), the backward pass rounds the logits' gradient to q's dtype before
    its two products with q and k, as a fused attention kernel does (the reference's attention on a GPU): without
    it they would run in float32 on a float32 gradient as large as the logits. In float32 this is the plain product.
    """
    if q.dtype == jnp.float32:
        return _float32_logits(q, k)
    return _logits_rounding_their_gradient(q, k)


def _float32_logits(q: jax.Array, k: jax.Array) -> jax.Array:
    return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _logits_rounding_their_gradient(q: jax.Array, k: jax.Array) -> jax.Array:
    return _float32_logits(q, k)


def _logits_forward(q: jax.Array, k: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _float32_logits(q, k), (q, k)


def _logits_backward(residuals: tuple[jax.Array, jax.Array], grad: jax.Array) -> tuple[jax.Array, jax.Array]:
    q, k = residuals
    grad = grad.astype(q.dtype)  # the products accumulate in float32 and return q's dtype
    return jnp.einsum("bhqk,bkhd->bqhd", grad, k), jnp.einsum("bhqk,bqhd->bkhd", grad, q)


_logits_rounding_their_gradient.defvjp(_logits_forward, _logits_backward)


class FeedForward(nnx.Module):
    """Linear -> GELU -> dropout -> Linear; at inference on long inputs, `blocks.frame_block` frames at a time."""

    def __init__(self, embed_dim: int, hidden: int, dropout_rate: float, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        kernel_init, bias_init = transformer_linear_init()
        self.dropout_rate = dropout_rate
        self.blocks = TransformerBlocks()
        self.intermediate_dense = Linear(
            embed_dim, hidden, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs
        )
        self.output_dense = Linear(
            hidden, embed_dim, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        """(B, T, D) -> (B, T, D)."""
        if deterministic and self.blocks.applies(x.shape[1]):
            # Per frame, so exact in blocks; the hidden activations (4x the width) are what would grow.
            return map_frames(
                lambda block: self.output_dense(gelu(self.intermediate_dense(block))), x, self.blocks.frame_block
            )
        x = gelu(self.intermediate_dense(x))
        x = dropout(x, self.dropout_rate, deterministic=deterministic, rngs=rngs)
        return self.output_dense(x)


class TransformerLayer(nnx.Module):
    """Attention + feed-forward, post-LN by default (pre-LN when `layer_norm_first`)."""

    def __init__(self, cfg: DinoSRConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        dim = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.encoder_layer_norm_first
        self.dropout_rate = cfg.encoder_dropout
        self.attention = SelfAttention(
            dim,
            cfg.encoder_num_heads,
            qkv_bias=cfg.encoder_qkv_bias,
            dropout_rate=cfg.encoder_attention_dropout,
            dtype=dtype,
            rngs=rngs,
        )
        self.layer_norm = LayerNorm(dim)
        self.feed_forward = FeedForward(
            dim, cfg.encoder_ff_interm_features, cfg.encoder_ff_interm_dropout, dtype=dtype, rngs=rngs
        )
        self.final_layer_norm = LayerNorm(dim)

    def __call__(
        self, x: jax.Array, key_mask: jax.Array | None, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> tuple[jax.Array, jax.Array]:
        """Returns (layer output, feed-forward output before dropout and residual)."""
        drop = lambda y: dropout(y, self.dropout_rate, deterministic=deterministic, rngs=rngs)  # noqa: E731
        residual = x
        if self.layer_norm_first:
            x = self.layer_norm(x)
        x = residual + drop(self.attention(x, key_mask, deterministic=deterministic, rngs=rngs))
        if self.layer_norm_first:
            layer_result = self.feed_forward(self.final_layer_norm(x), deterministic=deterministic, rngs=rngs)
            return x + drop(layer_result), layer_result
        x = self.layer_norm(x)
        layer_result = self.feed_forward(x, deterministic=deterministic, rngs=rngs)
        return self.final_layer_norm(x + drop(layer_result)), layer_result


class Transformer(nnx.Module):
    """Positional conv, layer norm (before the layers for post-LN layers, after them for pre-LN), the layers."""

    def __init__(self, cfg: DinoSRConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        self.num_layers = cfg.encoder_num_layers
        self.norm_before_layers = not cfg.encoder_layer_norm_first
        self.dropout_rate = cfg.encoder_dropout
        self.layer_drop = cfg.encoder_layer_drop
        self.pos_conv_embed = ConvPositionalEmbedding(
            cfg.encoder_embed_dim,
            cfg.encoder_pos_conv_kernel,
            cfg.encoder_pos_conv_groups,
            cfg.encoder_pos_conv_depth,
            dtype=dtype,
            rngs=rngs,
        )
        self.layer_norm = LayerNorm(cfg.encoder_embed_dim)
        self.layers = nnx.List([TransformerLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.encoder_num_layers)])
        self.execution = LayerExecution.from_config("auto", "none", jax.default_backend())

    def run_layers(
        self,
        x: jax.Array,
        frame_mask: jax.Array | None = None,
        *,
        num_layers: int | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        """Run the first `num_layers` layers: (last hidden state, layer outputs, feed-forward outputs).

        The last hidden state gets the final layer norm of pre-LN layers only when all layers ran.
        """
        num_layers = self.num_layers if num_layers is None else num_layers
        if not 0 < num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be between 1 and {self.num_layers}, got {num_layers}")
        x = x + self.pos_conv_embed(x, frame_mask)
        if self.norm_before_layers:
            x = self.layer_norm(x)
        x = dropout(x, self.dropout_rate, deterministic=deterministic, rngs=rngs)
        dropped = None
        if not deterministic and self.layer_drop > 0:
            if rngs is None:
                raise ValueError("layer drop needs `rngs` when deterministic=False")
            dropped = (jax.random.uniform(rngs.dropout(), (self.num_layers,)) <= self.layer_drop)[:num_layers]
        # One dropout key per layer, the same whether the layers are scanned or unrolled.
        keys = None if deterministic or rngs is None else jax.random.split(rngs.dropout(), num_layers)
        x, outputs, layer_results = run_layer_stack(
            list(self.layers[:num_layers]),
            x,
            frame_mask,
            keys=keys,
            dropped=dropped,
            execution=self.execution,
            deterministic=deterministic,
        )
        if not self.norm_before_layers and num_layers == self.num_layers:
            x = self.layer_norm(x)
        return x, outputs, layer_results

    def __call__(
        self,
        x: jax.Array,
        frame_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Final hidden state."""
        return self.run_layers(x, frame_mask, deterministic=deterministic, rngs=rngs)[0]

    def get_intermediate_outputs(
        self,
        x: jax.Array,
        frame_mask: jax.Array | None = None,
        num_layers: int | None = None,
        *,
        before_residual: bool = True,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> list[jax.Array]:
        """Per layer: the feed-forward output before dropout/residual/norm, or the layer's output."""
        _, outputs, layer_results = self.run_layers(
            x, frame_mask, num_layers=num_layers, deterministic=deterministic, rngs=rngs
        )
        return layer_results if before_residual else outputs
