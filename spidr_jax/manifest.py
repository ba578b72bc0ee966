"""`python -m spidr_jax.manifest`: write a manifest of a dataset's audio files (see `spidr_jax.data.write_manifest`)."""

import sys

from spidr_jax.data.write_manifest import main

if __name__ == "__main__":
    sys.exit(main())
