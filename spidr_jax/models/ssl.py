"""DinoSR and SpidR: extractor, student and EMA teacher transformers, prediction heads and online codebooks.

The modules hold no training logic: the train step (spidr_jax.train.step) updates the teacher, the codebooks and
the parameters functionally. Here are the forward passes: inference (intermediate outputs, codebook predictions,
units) and the masked-prediction pass that the loss is computed from.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from spidr_jax.config.model import DinoSRConfig, SpidRConfig
from spidr_jax.models.attention_kernel import AttentionKernel
from spidr_jax.models.blocked_attention import TransformerBlocks
from spidr_jax.models.chunked_extractor import ExtractorChunks
from spidr_jax.models.codebooks import Codebooks
from spidr_jax.models.extractor import FeatureExtractor, FeatureProjection, conv_output_lengths, length_mask
from spidr_jax.models.heads import PredictionHeads
from spidr_jax.models.layer_stack import LayerExecution
from spidr_jax.models.layers import dropout
from spidr_jax.models.transformer import FeedForward, SelfAttention, Transformer


class StepCounter(nnx.Variable):
    """The number of optimizer steps the weights have seen (kept through conversion)."""


class MaskedPrediction(NamedTuple):
    """What the loss needs: student log-probabilities and teacher targets, both (C, B, T, ...) and fp32."""

    log_probs: jax.Array  # (C, B, T, K)
    targets: jax.Array  # (C, B, T, D), instance-normalized over time, no gradient


def instance_norm_over_time(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Normalize each channel of (..., T, D) over T, in fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-2, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-2, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class DinoSR(nnx.Module):
    """DinoSR: all prediction heads read the student's final output."""

    def __init__(self, cfg: DinoSRConfig | None = None, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32) -> None:
        cfg = DinoSRConfig() if cfg is None else cfg
        self.config = cfg
        self.dtype = jnp.dtype(dtype)
        dim = cfg.encoder_embed_dim
        self.feature_extractor = FeatureExtractor(
            cfg.extractor_conv_layer_config,
            cfg.extractor_mode,
            conv_bias=cfg.extractor_conv_bias,
            dtype=dtype,
            rngs=rngs,
        )
        self.feature_projection = FeatureProjection(cfg.extractor_conv_layer_config[-1][0], dim, dtype=dtype, rngs=rngs)
        self.student = Transformer(cfg, dtype=dtype, rngs=rngs)
        # The teacher starts as the student with freshly drawn Linear weights (as the reference re-initializes
        # them); its positional convolution and norms are the student's.
        self.teacher = Transformer(cfg, dtype=dtype, rngs=rngs)
        nnx.update(self.teacher.pos_conv_embed, jax.tree.map(jnp.copy, nnx.state(self.student.pos_conv_embed)))
        self.heads = PredictionHeads(cfg.num_codebooks, dim, cfg.codebook_size, dtype=dtype, rngs=rngs)
        self.codebooks = Codebooks(cfg.num_codebooks, cfg.codebook_size, dim, rngs=rngs)
        self.mask_embedding = nnx.Param(jax.random.uniform(rngs.params(), (dim,), jnp.float32))
        self.current_step = StepCounter(jnp.zeros((), jnp.int32))

    @property
    def num_codebooks(self) -> int:
        """Number of codebooks (and heads)."""
        return self.config.num_codebooks

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return self.config.encoder_num_layers

    def set_long_input_limits(
        self, transformer: TransformerBlocks | None = None, extractor: ExtractorChunks | None = None
    ) -> None:
        """Where long inputs switch to the blocked transformer and the chunked extractor, and the block sizes.

        Both computations are exact; the defaults keep every training shape on the unblocked path.
        """
        for _, module in nnx.iter_graph(self):
            if transformer is not None and isinstance(module, SelfAttention | FeedForward):
                module.blocks = transformer
            if extractor is not None and isinstance(module, FeatureExtractor):
                module.chunks = extractor

    def set_attention_kernel(self, kernel: AttentionKernel) -> None:
        """Which kernel computes attention without dropout ("xla" or "cudnn", see attention_kernel); same numbers."""
        for _, module in nnx.iter_graph(self):
            if isinstance(module, SelfAttention):
                module.implementation = kernel

    def set_layer_execution(self, execution: LayerExecution) -> None:
        """How the student's and the teacher's layers run (scanned or unrolled, rematerialization); same numbers."""
        for _, module in nnx.iter_graph(self):
            if isinstance(module, Transformer):
                module.execution = execution

    # ---- shared pieces -------------------------------------------------------------------------------------

    def of_codebook_layers(self, layers: list[jax.Array]) -> list[jax.Array]:
        """From one entry per encoder layer, those of the codebook layers, in codebook order."""
        return [layers[layer - 1] for layer in self.config.codebook_layers]

    def frame_lengths(self, lengths: jax.Array) -> jax.Array:
        """Number of valid frames for waveforms of `lengths` samples."""
        return conv_output_lengths(lengths, self.config.extractor_conv_layer_config)

    def features(self, waveforms: jax.Array, lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """Projected extractor features (B, T, D) and the valid-frame mask (None without lengths)."""
        feats = self.feature_projection(self.feature_extractor(waveforms, lengths))
        frame_mask = None if lengths is None else length_mask(self.frame_lengths(lengths), feats.shape[1])
        return feats, frame_mask

    def head_inputs(
        self, x: jax.Array, frame_mask: jax.Array | None, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """What the heads read: the student's final output (B, T, D), shared by every head."""
        return self.student(x, frame_mask, deterministic=deterministic, rngs=rngs)

    def teacher_targets(self, feats: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
        """Instance-normalized outputs of the teacher's last C layers, (C, B, T, D) fp32, no gradient."""
        feats = jax.lax.stop_gradient(feats)
        layers = self.of_codebook_layers(self.teacher.get_intermediate_outputs(feats, frame_mask))
        return jax.lax.stop_gradient(instance_norm_over_time(jnp.stack(layers)))

    # ---- inference -----------------------------------------------------------------------------------------

    def get_intermediate_outputs(
        self,
        waveforms: jax.Array,
        lengths: jax.Array | None = None,
        *,
        num_layers: int | None = None,
        before_residual: bool = True,
    ) -> list[jax.Array]:
        """Student outputs of the first `num_layers` layers, each (B, T, D).

        `lengths` (B,) gives each waveform's number of samples in a zero-padded batch; each example then gets what
        it gets alone on its valid frames (`frame_lengths`). `before_residual` returns the feed-forward output
        before dropout, residual and final norm (the reference's default), else the layer's output.
        """
        feats, frame_mask = self.features(waveforms, lengths)
        return self.student.get_intermediate_outputs(feats, frame_mask, num_layers, before_residual=before_residual)

    def get_codebooks(
        self, waveforms: jax.Array, lengths: jax.Array | None = None, *, onehot: bool = False
    ) -> list[jax.Array | None]:
        """Per layer: None, or for the last C layers the codebook probabilities (B, T, K) (one-hot with onehot)."""
        feats, frame_mask = self.features(waveforms, lengths)
        probs = jnp.exp(self.heads(self.head_inputs(feats, frame_mask, deterministic=True, rngs=None)))
        if onehot:
            probs = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=jnp.int32)
        by_layer = dict(zip(self.config.codebook_layers, probs, strict=True))
        return [by_layer.get(layer) for layer in range(1, self.num_layers + 1)]

    def units(self, waveforms: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """Discrete units of the last C layers: (C, B, T) int32, argmax of each head."""
        feats, frame_mask = self.features(waveforms, lengths)
        log_probs = self.heads(self.head_inputs(feats, frame_mask, deterministic=True, rngs=None))
        return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)

    # ---- training ------------------------------------------------------------------------------------------

    def masked_prediction(
        self,
        waveforms: jax.Array,
        mask: jax.Array,
        *,
        lengths: jax.Array | None = None,
        channel_mask: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> MaskedPrediction:
        """Student predictions from masked features and teacher targets from the same, unmasked features.

        `mask` (B, T) bool marks the frames replaced by the mask embedding (the ones the loss is taken on);
        `channel_mask` (B, D) bool, if given, zeroes those feature channels of the student's input at every frame.
        `lengths` (B,), for a zero-padded batch (`data.enable_padding`), gives each row's samples: student and
        teacher then keep the padded frames out of attention and the positional convolution. As in the
        reference's padded batches, the extractor still convolves the zeros and the targets are normalized over
        the whole padded length (unlike inference, where a padded row gives what it gives alone).
        """
        feats, _ = self.features(waveforms)
        frame_mask = None if lengths is None else length_mask(self.frame_lengths(lengths), feats.shape[1])
        x = dropout(feats, self.config.encoder_projection_dropout, deterministic=deterministic, rngs=rngs)
        x = jnp.where(mask[..., None], self.mask_embedding[...].astype(x.dtype), x)
        if channel_mask is not None:
            x = jnp.where(channel_mask[:, None, :], jnp.zeros((), x.dtype), x)
        log_probs = self.heads(self.head_inputs(x, frame_mask, deterministic=deterministic, rngs=rngs))
        return MaskedPrediction(log_probs=log_probs, targets=self.teacher_targets(feats, frame_mask))


class SpidR(DinoSR):
    """SpidR: head i reads the student's i-th of its last C intermediate layers (before the residual)."""

    def __init__(self, cfg: SpidRConfig | None = None, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32) -> None:
        super().__init__(SpidRConfig() if cfg is None else cfg, rngs=rngs, dtype=dtype)

    def head_inputs(
        self, x: jax.Array, frame_mask: jax.Array | None, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """The student's last C feed-forward outputs, (C, B, T, D)."""
        layers = self.student.get_intermediate_outputs(x, frame_mask, deterministic=deterministic, rngs=rngs)
        return jnp.stack(self.of_codebook_layers(layers))


def build_model(cfg: DinoSRConfig, *, seed: int = 0, dtype: jnp.dtype = jnp.float32) -> DinoSR:
    """A freshly initialized SpidR or DinoSR, chosen by the config's class."""
    cls = SpidR if isinstance(cfg, SpidRConfig) else DinoSR
    return cls(cfg, rngs=nnx.Rngs(params=seed), dtype=dtype)
