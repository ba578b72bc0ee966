"""Benchmarks of spidr_jax against the reference, run from the repository root as `python -m bench.<name>`.

    python -m bench.suite [--quick]        # every figure in one process: step, MFU, memory, compile, data, extraction
    python -m bench.suite --gpu            # the 8-minute GPU run, each part a process under its own time limit
    python -m bench.step_speed             # the training step against the reference's
    python -m bench.compile_time           # the step's compile time, layers scanned and unrolled
    python -m bench.extraction throughput  # feature extraction (also: extractor, long-file-memory)
    python -m bench.results DIR            # the table and JSON line of a GPU run's results folder
    python -m bench.abx_speed demo         # ABX in JAX (also: synthetic; bench.abx_fastabx for fastabx's side)
    python -m bench.kmeans_memory          # streaming k-means (also: bench.kmeans_quality)
    python -m bench.aot_breakdown HLO      # a step compiled by spidr_jax.aot: bytes and kernels by part

Not tests: the numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs `python -m bench.<module> ARGS` with this interpreter (from the repository root)."""
    return [sys.executable, "-m", f"bench.{module}", *args]
