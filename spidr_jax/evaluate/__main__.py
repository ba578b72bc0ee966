"""`python -m spidr_jax.evaluate`: see `spidr_jax.evaluate.cli`."""

from spidr_jax.evaluate.cli import main

if __name__ == "__main__":
    main()
