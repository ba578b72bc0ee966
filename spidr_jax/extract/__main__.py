"""`python -m spidr_jax.extract`: see `spidr_jax.extract.cli`."""

from spidr_jax.extract.cli import main

if __name__ == "__main__":
    main()
