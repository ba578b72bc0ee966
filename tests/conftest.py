"""Test setup: JAX on CPU, and the reference package importable as the oracle."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tests.slurm_cluster import slurm_cluster  # noqa: F401 (the session fixture of tests/test_slurm.py)
