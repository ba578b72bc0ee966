"""Flax NNX modules for SpidR and DinoSR."""

from spidr_jax.models.ssl import DinoSR, MaskedPrediction, SpidR, build_model

__all__ = ["DinoSR", "MaskedPrediction", "SpidR", "build_model"]
