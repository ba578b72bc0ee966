"""Compile the real training step for a TPU slice or GPU node that is not attached: fit, FLOPs, bytes, a bound.

`python -m spidr_jax.aot --config=configs/base.py --target=v5p-128` (see `spidr_jax.aot.cli`), or from Python
`spidr_jax.aot.check(cfg, "v5p-128")` (see `spidr_jax.aot.check`).
"""

from spidr_jax.aot.check import check
from spidr_jax.aot.report import AotRecord
from spidr_jax.aot.targets import Target, parse_target

__all__ = ["AotRecord", "Target", "check", "parse_target"]
