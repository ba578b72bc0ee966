"""`python -m spidr_jax.validate`: validate a training run's checkpoint (see `spidr_jax.train.validate`)."""

from spidr_jax.train.validate import main

if __name__ == "__main__":
    main()
