"""Test setup: JAX on CPU, and the reference package importable as the oracle."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs of the trainers and extractions the tests start go to a cache of this session, not the home's.
os.environ.setdefault("SPIDR_JAX_COMPILATION_CACHE", tempfile.mkdtemp(prefix="spidr_jax_test_cache_"))

from tests.slurm_cluster import slurm_cluster  # noqa: F401 (the session fixture of tests/test_slurm.py)
