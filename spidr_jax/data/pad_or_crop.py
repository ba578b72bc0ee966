"""Static lengths for padded batches (``data.enable_padding``): each row padded up or cropped down, less waste.

A row between two chosen lengths ``a < x < b`` either is cropped to ``a`` (``x - a`` samples of audio lost) or
padded to ``b`` (``b - x`` samples of computation on zeros), whichever wastes fewer samples; rows below the
shortest length are padded, rows above the longest are cropped. The lengths minimize the total waste (cropped
plus padded samples) for the number of shapes allowed, exactly: a dynamic program over candidate lengths (the
multiples of the extractor stride just below and just above every row), with the cost of every pair of
consecutive lengths computed at once from prefix sums over the sorted rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_CANDIDATES = 1500  # distinct lengths considered: 1500 x 1500 tables, about 100 MB while planning


def assign_pad_or_crop(lengths: np.ndarray, bucket_lengths: list[int]) -> np.ndarray:
    """Each row's bucket index: the one below (cropped) or above (padded), whichever wastes fewer samples.

    Ties go to cropping; rows shorter than every bucket are padded to the shortest, longer ones cropped to the
    longest.
    """
    values = np.asarray(bucket_lengths, dtype=np.int64)
    x = np.asarray(lengths, dtype=np.int64)
    above = np.minimum(np.searchsorted(values, x, side="left"), len(values) - 1)  # first bucket >= x
    below = np.maximum(above - 1, 0)
    crop_waste = x - values[below]
    pad_waste = values[above] - x
    return np.where((pad_waste >= 0) & (crop_waste >= 0) & (crop_waste <= pad_waste), below, above)


def choose_pad_or_crop_lengths(
    lengths: np.ndarray,
    num_shapes: int,
    *,
    multiple: int,
    max_length: int,
    rows_needed: Callable[[int], int] | None = None,
) -> list[int]:
    """At most ``num_shapes`` lengths (ascending multiples of ``multiple``, at most ``max_length``) wasting least.

    With ``rows_needed``, a length L must receive at least ``rows_needed(L)`` of the rows padded up to it or
    already of that length (rows cropped down to it come on top); when nothing satisfies that (a tiny dataset),
    the constraint is dropped. Ties go to fewer shapes.
    """
    if num_shapes < 1:
        raise ValueError(f"num_shapes must be >= 1, got {num_shapes}")
    x = np.sort(np.asarray(lengths, dtype=np.int64))
    top = max_length // multiple * multiple
    if x.size == 0 or top < multiple:
        raise ValueError(f"need rows and a max_length of at least {multiple} samples")
    # The lengths just below and above every row; a coarser grid when there would be more than MAX_CANDIDATES
    # (the tables are candidates x candidates).
    grid = multiple * -(-min(top, int(x.max()) + multiple) // (multiple * MAX_CANDIDATES))
    grid = max(grid, multiple)
    # Rows longer than max_length are cropped to its multiple: that is a candidate too.
    candidates = np.unique(np.minimum(np.concatenate([x // grid, -(-x // grid)]) * grid, top))
    candidates = candidates[candidates >= multiple]
    needed = np.zeros(len(candidates), dtype=np.int64)
    if rows_needed is not None:
        needed = np.array([rows_needed(int(c)) for c in candidates], dtype=np.int64)
    costs = _WasteTable(x, candidates)
    chosen = _best_lengths(costs, num_shapes, needed)
    if chosen is None:
        chosen = _best_lengths(costs, num_shapes, np.zeros_like(needed))
    assert chosen is not None  # without a row constraint one length is always feasible
    return [int(candidates[j]) for j in chosen]


class _WasteTable:
    """Waste (samples) and row counts of the sorted rows ``x`` against the candidate lengths ``c``.

    ``first[j]``: rows up to c[j] padded to it; ``last[j]``: rows above c[j] cropped to it; ``between[i, j]``
    (i < j): rows in (c[i], c[j]], each to the nearer of the two; ``from_below[i, j]``: those padded up to c[j];
    ``first_rows[j]``: the rows up to c[j].
    """

    def __init__(self, x: np.ndarray, c: np.ndarray) -> None:
        count = lambda v: np.searchsorted(x, v, side="right")  # noqa: E731 - rows <= v
        prefix = np.concatenate([[0], np.cumsum(x)])
        total = lambda v: prefix[count(v)]  # noqa: E731 - their sum
        self.first_rows = count(c)
        self.first = c * self.first_rows - total(c)
        self.last = (prefix[-1] - total(c)) - c * (len(x) - self.first_rows)
        lo, hi = c[:, None], c[None, :]
        middle = (lo + hi) / 2  # rows up to the middle are cropped to lo, the others padded to hi
        cropped_rows, padded_rows = count(middle) - count(lo), count(hi) - count(middle)
        crop = (total(middle) - total(lo)) - lo * cropped_rows
        pad = hi * padded_rows - (total(hi) - total(middle))
        upper = np.triu(np.ones((len(c), len(c)), dtype=bool), k=1)
        self.between = np.where(upper, crop + pad, np.inf)
        self.from_below = np.where(upper, padded_rows, 0)


def _best_lengths(costs: _WasteTable, num_shapes: int, needed: np.ndarray) -> list[int] | None:
    """Candidate indices of the least-waste choice under per-length row minimums; None when infeasible."""
    n = len(needed)
    best = np.where(costs.first_rows >= needed, costs.first.astype(np.float64), np.inf)  # one length, ending at j
    parents: list[np.ndarray] = []
    results: list[tuple[float, int, int]] = []  # (waste, number of lengths, last index)
    for level in range(1, min(num_shapes, n) + 1):
        if level > 1:
            total = best[:, None] + np.where(costs.from_below >= needed[None, :], costs.between, np.inf)
            parent = np.argmin(total, axis=0)
            best = total[parent, np.arange(n)]
            parents.append(parent)
        finished = best + costs.last
        j = int(np.argmin(finished))
        if np.isfinite(finished[j]):
            results.append((float(finished[j]), level, j))
    if not results:
        return None
    _, level, j = min(results, key=lambda result: (result[0], result[1]))
    chosen = [j]
    for parent in reversed(parents[: level - 1]):
        j = int(parent[j])
        chosen.append(j)
    return sorted(chosen)
