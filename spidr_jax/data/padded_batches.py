"""Whole utterances grouped into zero-padded batches of a few static shapes (for inference: no cropping).

At most `max_shapes` padded lengths are chosen so that the padding over the whole manifest is minimal (an exact
dynamic program over the sorted lengths); each utterance is padded to the shortest chosen length that holds it.
The utterances of one length are split evenly into batches under a token budget (a multiple of the device count),
so a manifest compiles at most `max_shapes` shapes and filler rows stay few.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PaddedBatch:
    """Rows (indices into the input) to pad to `length` samples, in a batch of `batch_size` (filler rows added)."""

    length: int
    batch_size: int
    indices: tuple[int, ...]


def choose_padded_lengths(lengths: Sequence[int], max_shapes: int, *, multiple: int) -> list[int]:
    """At most `max_shapes` padded lengths (multiples of `multiple`) minimizing the total padding.

    Each utterance is padded to the shortest chosen length that holds it; the longest chosen length holds all.
    Exact: a dynamic program over the distinct rounded lengths (the candidates), one shape at a time.
    """
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
    rounded = np.sort(-(-np.asarray(lengths, dtype=np.int64) // multiple) * multiple)
    candidates = np.unique(rounded)
    ends = np.searchsorted(rounded, candidates, side="right")  # utterances up to each candidate
    starts = np.concatenate([[0], ends[:-1]])  # row r: a group starting after candidate r - 1
    prefix = np.concatenate([[0], np.cumsum(rounded)]).astype(np.float64)
    # padding[r, j]: utterances starts[r] .. ends[j] - 1 padded to candidates[j]; only r <= j is a group.
    padding = candidates[None, :] * (ends[None, :] - starts[:, None]) - (
        prefix[ends][None, :] - prefix[starts][:, None]
    )
    size = len(candidates)
    padding = np.where(np.arange(size)[:, None] <= np.arange(size)[None, :], padding, np.inf)
    best = padding[0]  # one shape ending at each candidate
    previous: list[np.ndarray] = []
    for _ in range(1, min(max_shapes, size)):
        options = best[:-1, None] + padding[1:, :]  # the group before ends at candidate r - 1
        start = np.argmin(options, axis=0)
        value = options[start, np.arange(size)]
        previous.append(np.where(value < best, start, -1))  # -1: no gain from one more shape here
        best = np.minimum(value, best)
    chosen, j = [int(candidates[-1])], size - 1
    for step in reversed(previous):
        if step[j] >= 0:
            j = int(step[j])  # the previous group ends at candidate j (row j + 1 started after it)
            chosen.append(int(candidates[j]))
    return sorted(chosen)


def plan_padded_batches(
    lengths: Sequence[int],
    *,
    max_batch_samples: int,
    max_batch_size: int,
    batch_multiple: int = 1,
    max_shapes: int = 8,
    multiple: int = 320,
) -> list[PaddedBatch]:
    """Batches covering every index of `lengths` once, longest first (so memory problems show up early)."""
    if not lengths:
        return []
    padded = choose_padded_lengths(lengths, max_shapes, multiple=multiple)
    groups: dict[int, list[int]] = {}
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        groups.setdefault(padded[int(np.searchsorted(padded, lengths[index]))], []).append(index)
    batches = []
    for length in sorted(groups, reverse=True):
        members = groups[length]
        limit = max(batch_multiple, min(max_batch_samples // length, max_batch_size) // batch_multiple * batch_multiple)
        # Split evenly: n batches of about len/n rows rather than full batches and one mostly-filler batch.
        num_batches = math.ceil(len(members) / limit)
        size = math.ceil(math.ceil(len(members) / num_batches) / batch_multiple) * batch_multiple
        batches.extend(
            PaddedBatch(length, size, tuple(members[start : start + size])) for start in range(0, len(members), size)
        )
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[PaddedBatch]) -> float:
    """Share of the computed samples that are padding or filler rows."""
    computed = sum(batch.length * batch.batch_size for batch in batches)
    return 1.0 - sum(lengths) / computed if computed else 0.0
