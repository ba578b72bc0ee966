"""Test setup: JAX on CPU, and the reference package importable as the oracle."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
