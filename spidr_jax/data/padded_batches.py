"""Whole utterances grouped into zero-padded batches of a few static shapes (for inference: no cropping).

Each utterance goes to the shortest rung of a geometric ladder of lengths that holds it; each rung has one batch
size (a token budget divided by the rung length, a multiple of the device count). Rungs too sparse to fill one
batch are merged upwards. So a whole manifest compiles a handful of shapes, and on large manifests padding costs
at most `growth - 1` of the audio.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PaddedBatch:
    """Rows (indices into the input) to pad to `length` samples, in a batch of `batch_size` (filler rows added)."""

    length: int
    batch_size: int
    indices: tuple[int, ...]


def length_ladder(min_length: int, max_length: int, *, growth: float, multiple: int) -> list[int]:
    """Geometric lengths from `min_length` up to at least `max_length`, each a multiple of `multiple`."""
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    rungs, length = [], max(min_length, 1)
    while True:
        rung = math.ceil(length / multiple) * multiple
        if not rungs or rung > rungs[-1]:
            rungs.append(rung)
        if rung >= max_length:
            return rungs
        length = rung * growth


def plan_padded_batches(
    lengths: Sequence[int],
    *,
    max_batch_samples: int,
    max_batch_size: int,
    batch_multiple: int = 1,
    growth: float = 1.3,
    multiple: int = 320,
) -> list[PaddedBatch]:
    """Batches covering every index of `lengths` once, longest rung first (so memory problems show up early)."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ladder = length_ladder(min(lengths), max(lengths), growth=growth, multiple=multiple)
    by_rung: dict[int, list[int]] = {}
    rung = 0
    for index in order:
        while ladder[rung] < lengths[index]:
            rung += 1
        by_rung.setdefault(ladder[rung], []).append(index)

    def rung_batch_size(length: int) -> int:
        size = min(max_batch_samples // length, max_batch_size)
        return max(batch_multiple, size // batch_multiple * batch_multiple)

    # A rung that cannot fill one batch would cost a compilation for a partial batch: its rows move up a rung.
    rungs = sorted(by_rung)
    for shorter, longer in itertools.pairwise(rungs):
        if len(by_rung[shorter]) < rung_batch_size(shorter):
            by_rung[longer] = by_rung.pop(shorter) + by_rung[longer]
    batches = []
    for length in sorted(by_rung, reverse=True):
        members = by_rung[length]
        # Never more filler rows than needed to reach a multiple of the device count.
        size = min(rung_batch_size(length), math.ceil(len(members) / batch_multiple) * batch_multiple)
        batches.extend(
            PaddedBatch(length, size, tuple(members[start : start + size])) for start in range(0, len(members), size)
        )
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[PaddedBatch]) -> float:
    """Share of the computed samples that are padding or filler rows."""
    computed = sum(batch.length * batch.batch_size for batch in batches)
    return 1.0 - sum(lengths) / computed if computed else 0.0
