"""Reading what a training run left in its workdir, for the tests that start runs in other processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spidr_jax.evaluate.plots import read_scalars


def logged_steps(workdir: Path) -> list[int]:
    """Steps with a logged loss so far (none while the event file is not written yet)."""
    try:
        return [step for step, _ in read_scalars(workdir).get("train/loss", [])]
    except (OSError, ValueError):
        return []


def leaves(tree: object) -> list[np.ndarray]:
    """The arrays of a nested dict in a fixed order (keys sorted), to compare two model states."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree, key=str) for leaf in leaves(tree[key])]
    return [np.asarray(tree)]
