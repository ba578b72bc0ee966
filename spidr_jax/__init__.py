"""spidr-jax: SpidR and DinoSR in JAX/Flax."""
