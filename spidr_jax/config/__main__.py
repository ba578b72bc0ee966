"""`python -m spidr_jax.config`: print a resolved config (see `spidr_jax.config.cli`)."""

from spidr_jax.config.cli import main

if __name__ == "__main__":
    main()
