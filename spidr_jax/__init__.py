"""spidr-jax: SpidR and DinoSR self-supervised speech models in JAX/Flax.

import spidr_jax
model = spidr_jax.load_pretrained("converted/spidr_base")     # or a training run's workdir
layers = model.get_intermediate_outputs(waveforms)              # (batch, samples) standardized 16 kHz audio
"""

from spidr_jax.accelerators import use_cpu_without_accelerator

use_cpu_without_accelerator()  # before JAX starts a backend: no TPU/GPU plugin attempts on a CPU-only machine

from spidr_jax.pretrained import load_pretrained  # noqa: E402

__all__ = ["load_pretrained"]
__version__ = "0.1.0"
