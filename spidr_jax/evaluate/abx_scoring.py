"""From cells to the token pairs they compare, and from the pairs' distances back to each cell's error.

A cell (A, B, X) compares, for every x of X, its distance to every a of A with its distance to every b of B; so it
needs the pairs X x A and X x B (x first: the DTW's rows are x's frames, as in fastabx). Pairs are shared by many
cells and measured once. A cell's error counts, over its triplets, 1 when x is closer to b than to a
(``d(x, a) > d(x, b)``), 1/2 on a tie, 0 otherwise, divided by the number of triplets (x != a within speaker).
"""

from __future__ import annotations

import numpy as np

from spidr_jax.evaluate.abx_cells import AbxCells

__all__ = ["cell_errors", "needed_pairs"]

_TRIPLETS_PER_STEP = 1 << 24  # bounds the memory of one vectorised comparison


def _set_tokens(cells: AbxCells, sets: np.ndarray, size: int) -> np.ndarray:
    """(len(sets), size) tokens of sets that all have ``size`` tokens."""
    return cells.members[cells.offsets[sets][:, None] + np.arange(size)[None, :]]


def needed_pairs(cells: AbxCells, num_tokens: int) -> np.ndarray:
    """Sorted unique keys ``x * num_tokens + y`` of the token pairs that the cells compare (never x == y)."""
    rectangles = np.concatenate([np.stack([cells.cell_x, cells.cell_a], 1), np.stack([cells.cell_x, cells.cell_b], 1)])
    rectangles = np.unique(rectangles, axis=0)
    sizes = cells.sizes
    rows, cols = sizes[rectangles[:, 0]], sizes[rectangles[:, 1]]
    count = rows * cols
    rectangle = np.repeat(np.arange(len(rectangles)), count)
    position = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    x = cells.members[cells.offsets[rectangles[rectangle, 0]] + position // cols[rectangle]]
    y = cells.members[cells.offsets[rectangles[rectangle, 1]] + position % cols[rectangle]]
    keys = np.unique(x.astype(np.int64) * num_tokens + y)
    return keys[keys // num_tokens != keys % num_tokens]


def _lookup(keys: np.ndarray, distances: np.ndarray, x: np.ndarray, y: np.ndarray, num_tokens: int) -> np.ndarray:
    """Distances of the pairs (x, y) (broadcast); pairs that were not measured (x == y) read an arbitrary value."""
    wanted = x.astype(np.int64) * num_tokens + y
    return distances[np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)]


def cell_errors(cells: AbxCells, keys: np.ndarray, distances: np.ndarray, num_tokens: int) -> np.ndarray:
    """Error of every cell, (C,) float64, from the distances of the pairs ``keys`` (see ``needed_pairs``)."""
    sizes = cells.sizes
    na, nb, nx = sizes[cells.cell_a], sizes[cells.cell_b], sizes[cells.cell_x]
    errors = np.empty(len(cells.cell_a))
    shapes, shape_of_cell = np.unique(np.stack([na, nb, nx], 1), axis=0, return_inverse=True)
    shape_of_cell = shape_of_cell.ravel()
    for index, (size_a, size_b, size_x) in enumerate(shapes.tolist()):
        members = np.flatnonzero(shape_of_cell == index)
        step = max(1, _TRIPLETS_PER_STEP // (size_a * size_b * size_x))
        for begin in range(0, len(members), step):
            chosen = members[begin : begin + step]
            a = _set_tokens(cells, cells.cell_a[chosen], size_a)
            b = _set_tokens(cells, cells.cell_b[chosen], size_b)
            x = _set_tokens(cells, cells.cell_x[chosen], size_x)
            to_a = _lookup(keys, distances, x[:, :, None], a[:, None, :], num_tokens)  # (C, nx, na)
            to_b = _lookup(keys, distances, x[:, :, None], b[:, None, :], num_tokens)  # (C, nx, nb)
            if cells.symmetric:  # X is A: a token is not compared with itself
                to_a[:, np.arange(size_x), np.arange(size_a)] = -np.inf
            difference = to_a[:, :, :, None] - to_b[:, :, None, :]
            wrong = np.count_nonzero(difference > 0, axis=(1, 2, 3)) + 0.5 * np.count_nonzero(
                difference == 0, axis=(1, 2, 3)
            )
            triplets = size_a * size_b * ((size_a - 1) if cells.symmetric else size_x)
            errors[chosen] = wrong / triplets
    return errors
