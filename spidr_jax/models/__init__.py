"""Flax NNX modules for SpidR and DinoSR."""

from spidr_jax.models.blocked_attention import TransformerBlocks
from spidr_jax.models.chunked_extractor import ExtractorChunks
from spidr_jax.models.ssl import DinoSR, MaskedPrediction, SpidR, build_model

__all__ = ["DinoSR", "ExtractorChunks", "MaskedPrediction", "SpidR", "TransformerBlocks", "build_model"]
