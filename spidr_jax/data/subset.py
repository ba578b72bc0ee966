"""A deterministic subset of a manifest's rows holding about a given number of hours of audio."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spidr_jax.data.audio import SAMPLE_RATE
from spidr_jax.data.manifest import ManifestRow

SUBSET_STREAM = 11  # tag of the random stream drawn from the seed


def _seconds_at_16khz(row: ManifestRow) -> float:
    return row.num_samples / SAMPLE_RATE


def sample_hours(
    rows: Sequence[ManifestRow],
    hours: float,
    *,
    seed: int = 0,
    seconds: Callable[[ManifestRow], float] = _seconds_at_16khz,
) -> list[ManifestRow]:
    """Rows drawn at random without replacement until they hold at least ``hours`` of audio, in manifest order.

    The draw depends only on ``seed`` and the rows, so every process and every rerun gets the same subset. The
    subset overshoots ``hours`` by less than its last row; a manifest shorter than ``hours`` comes back whole.
    ``seconds`` gives a row's duration (default: ``num_samples`` at 16 kHz; pass the file's own rate when the
    manifest holds other rates).
    """
    if not hours > 0:
        raise ValueError(f"the number of hours must be positive, got {hours}")
    durations = np.array([seconds(row) for row in rows], dtype=np.float64)
    order = np.random.default_rng([seed, SUBSET_STREAM]).permutation(len(rows))
    # Keep the rows of the permutation whose preceding total is still below the target.
    before = np.cumsum(durations[order]) - durations[order]
    chosen = np.sort(order[before < hours * 3600.0])
    return [rows[i] for i in chosen]
