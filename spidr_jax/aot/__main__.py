"""`python -m spidr_jax.aot`: compile the training step for a TPU slice or GPU node from any machine."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"  # before JAX starts: this process never uses the local accelerator

from spidr_jax.aot.cli import main

if __name__ == "__main__":
    main()
