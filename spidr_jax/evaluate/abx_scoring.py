"""From cells to the token pairs they compare, and from the pairs' distances back to each cell's error.

A cell (A, B, X) compares, for every x of X, its distance to every a of A with its distance to every b of B; so it
needs the rectangles of pairs X x A and X x B (x first: the DTW's rows are x's frames, as in fastabx). Rectangles
are shared by many cells and measured once: the pairs of rectangle ``r`` of sets (S, T) sit at
``start[r] + i * |T| + j`` for the i-th token of S and the j-th of T. A cell's error counts, over its triplets, 1
when x is closer to b than to a (``d(x, a) > d(x, b)``), 1/2 on a tie, 0 otherwise, divided by the number of
triplets (x != a within speaker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spidr_jax.evaluate.abx_cells import AbxCells

__all__ = ["Rectangles", "cell_errors", "rectangles"]

_TRIPLETS_PER_STEP = 1 << 24  # bounds the memory of one vectorised comparison


@dataclass(frozen=True)
class Rectangles:
    """The (X set, other set) rectangles of token pairs that the cells need, and every pair of them.

    ``keys`` (sorted) are ``x_set * num_sets + other_set``; ``start[r]`` is where rectangle ``r``'s pairs begin in
    ``x``/``y``, the tokens of each pair (x == y on the diagonal of a set against itself).
    """

    num_sets: int
    keys: np.ndarray
    start: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def find(self, x_sets: np.ndarray, other_sets: np.ndarray) -> np.ndarray:
        """Index of the rectangles (x_set, other_set)."""
        return np.searchsorted(self.keys, x_sets.astype(np.int64) * self.num_sets + other_sets)


def rectangles(cells: AbxCells) -> Rectangles:
    """Every token pair that the cells compare, grouped by rectangle."""
    num_sets = len(cells.sizes)
    x_sets = cells.cell_x.astype(np.int64) * num_sets
    keys = np.unique(np.concatenate([x_sets + cells.cell_a, x_sets + cells.cell_b]))
    first, second = keys // num_sets, keys % num_sets
    sizes = cells.sizes
    rows, cols = sizes[first], sizes[second]
    count = rows * cols
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    rectangle = np.repeat(np.arange(len(keys)), count)
    position = np.arange(count.sum()) - start[rectangle]
    x = cells.members[cells.offsets[first[rectangle]] + position // cols[rectangle]]
    y = cells.members[cells.offsets[second[rectangle]] + position % cols[rectangle]]
    return Rectangles(num_sets=num_sets, keys=keys, start=start, x=x, y=y)


def _distances(distances: np.ndarray, start: np.ndarray, rows: int, cols: int, stride: int) -> np.ndarray:
    """(C, rows, cols) distances of C rectangles (or the first ``cols`` columns of them), each ``stride`` wide."""
    offsets = np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]
    return distances[start[:, None, None] + offsets[None]]


def cell_errors(cells: AbxCells, found: Rectangles, distances: np.ndarray) -> np.ndarray:
    """Error of every cell, (C,) float64, from the distances of the pairs of ``found`` (in its order)."""
    sizes = cells.sizes
    na, nb, nx = sizes[cells.cell_a], sizes[cells.cell_b], sizes[cells.cell_x]
    to_a_start = found.start[found.find(cells.cell_x, cells.cell_a)]
    to_b_start = found.start[found.find(cells.cell_x, cells.cell_b)]
    errors = np.empty(len(cells.cell_a))
    shapes, shape_of_cell = np.unique(np.stack([na, nb, nx], 1), axis=0, return_inverse=True)
    shape_of_cell = shape_of_cell.ravel()
    for index, (size_a, size_b, size_x) in enumerate(shapes.tolist()):
        members = np.flatnonzero(shape_of_cell == index)
        step = max(1, _TRIPLETS_PER_STEP // (size_a * size_b * size_x))
        for begin in range(0, len(members), step):
            chosen = members[begin : begin + step]
            to_a = _distances(distances, to_a_start[chosen], size_x, size_a, size_a)  # (C, nx, na)
            to_b = _distances(distances, to_b_start[chosen], size_x, size_b, size_b)  # (C, nx, nb)
            if cells.symmetric:  # X is A: a token is not compared with itself
                to_a[:, np.arange(size_x), np.arange(size_a)] = -np.inf
            difference = to_a[:, :, :, None] - to_b[:, :, None, :]
            wrong = np.count_nonzero(difference > 0, axis=(1, 2, 3)) + 0.5 * np.count_nonzero(
                difference == 0, axis=(1, 2, 3)
            )
            triplets = size_a * size_b * ((size_a - 1) if cells.symmetric else size_x)
            errors[chosen] = wrong / triplets
    return errors
