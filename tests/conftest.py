"""Test setup: JAX on CPU, and the reference package importable as the oracle."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs of the trainers and extractions the tests start go to a cache of this session, not the home's.
# The process that makes it (pytest's main process; xdist's workers inherit the variable) removes it at exit.
if "SPIDR_JAX_COMPILATION_CACHE" not in os.environ:
    os.environ["SPIDR_JAX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="spidr_jax_test_cache_")
    atexit.register(shutil.rmtree, os.environ["SPIDR_JAX_COMPILATION_CACHE"], ignore_errors=True)

from pathlib import Path

import pytest

from tests.slurm_cluster import slurm_cluster  # noqa: F401 (the session fixture of tests/test_slurm.py)
from tests.tone_corpus import write_tone_corpus

# The slowest modules first: tests/run.sh gives whole modules to two workers, and a long module started last would
# leave one worker running alone at the end. The others follow in their usual order.
SLOWEST_MODULES = (  # by their time in a full run on 2 cores, longest first
    "test_train_run",
    "test_multiprocess",
    "test_slurm",
    "test_aot",
    "test_evaluate_cli",
    "test_train_faults",
    "test_step_parity",
    "test_readme_commands",
    "test_model_parity",
    "test_step_sharding",
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of a small corpus of tones (tests/tone_corpus.py), for the runs of several processes."""
    root = tmp_path_factory.mktemp("audio")
    (root / "train.csv").write_text("\n".join(write_tone_corpus(root)) + "\n")
    return root / "train.csv"


@pytest.fixture(scope="module")
def cache() -> Path:
    """The compilation cache of this test session, shared by the processes the tests start: a trainer of the tiny
    config compiles its step once for the whole session (no test asserts that a program is compiled)."""
    return Path(os.environ["SPIDR_JAX_COMPILATION_CACHE"])


def pytest_collection_modifyitems(items: list) -> None:
    """Run the slowest modules first (a stable sort: tests keep their order within a module)."""
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
