"""`python -m spidr_jax.convert`: see `spidr_jax.convert.cli`."""

from spidr_jax.convert.cli import main

if __name__ == "__main__":
    main()
