"""Dynamic time warping of many pairs of sequences at once, in JAX, normalised as in ZeroSpeech ABX.

Given the frame distance matrix ``d`` of a pair (rows: frames of the first sequence, columns: of the second), the
accumulated cost is

    C[0, 0] = d[0, 0],   C[i, j] = d[i, j] + min(C[i-1, j], C[i-1, j-1], C[i, j-1])

(no weight on the diagonal step), and the DTW distance is ``C[n-1, m-1]`` divided by the number of cells on the
path that a backtrack from ``(n-1, m-1)`` takes: it steps diagonally when ``C[i-1, j-1]`` is the smallest of the
three (ties included), else left when ``C[i, j-1] <= C[i-1, j]``, else up, and runs straight along the first row
or column once it reaches one. This is the DTW of the Libri-Light / ZeroSpeech 2021 ABX and of fastabx.

The backtrack's choice at a cell depends only on the accumulated costs of its three predecessors, so the path
length is carried forward with the cost (``L[i, j] = 1 + L[chosen predecessor]``) instead of walking back.

Pairs are padded to a common shape: cells outside a pair's true lengths are computed and ignored (the recurrence
only looks up and left, so padding never reaches the cell that is read, whatever it holds). The recurrence runs
over anti-diagonals, whose cells are independent: ``n + m - 1`` sequential steps at most, each a vector operation
over all pairs. Pairs are the last (fastest) axis, so that every step is a plain elementwise loop over them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["dtw_distances", "skew"]


def skew(matrices: jax.Array, fill: float) -> jax.Array:
    """Anti-diagonals of (N, M, ...) matrices: (N + M - 1, N, ...), entry ``[k, i]`` = ``matrices[i, k - i]``.

    Entries with ``k - i`` outside ``[0, M)`` hold ``fill``. Row ``i`` is shifted right by ``i`` with a pad and a
    reshape (no gather): in a (N, M + N) padded layout read with a row stride of ``M + N - 1``, element
    ``[i, k]`` lands on ``[i, k - i]``, and the negative or too large ``k - i`` on padding.
    """
    n, m, *rest = matrices.shape
    padded = jnp.pad(matrices, [(0, 0), (0, n)] + [(0, 0)] * len(rest), constant_values=fill)
    flat = padded.reshape(n * (m + n), *rest)[: n * (m + n - 1)]
    return jnp.moveaxis(flat.reshape(n, m + n - 1, *rest), 1, 0)


def _from_above(values: jax.Array, fill: jax.Array | float) -> jax.Array:
    """``out[i] = values[i - 1]``, ``out[0] = fill``: on a diagonal, the value of the row above."""
    head = jnp.full((1, *values.shape[1:]), fill, values.dtype)
    return jnp.concatenate([head, values[:-1]], axis=0)


def dtw_distances(
    distances: jax.Array, rows: jax.Array, cols: jax.Array, num_steps: jax.Array | int | None = None
) -> jax.Array:
    """Normalised DTW distance of each pair: (P,) float32.

    :param distances: (N, M, P) float32 frame distances, pairs last, padded; pair ``p`` uses
        ``[:rows[p], :cols[p], p]``.
    :param rows: (P,) int, the true number of frames of each pair's first sequence (1..N).
    :param cols: (P,) int, of its second sequence (1..M).
    :param num_steps: How many anti-diagonals to run, at least ``max(rows + cols - 1)`` (may be traced, so that
        a batch of short pairs stops early without a new compilation); all ``N + M - 1`` by default.
    """
    n, m, num_pairs = distances.shape
    diagonals = skew(distances, jnp.inf)  # (K, N, P); inf outside the matrix keeps those cells unreachable
    total = n + m - 1
    zeros = jnp.zeros((n, num_pairs), distances.dtype)
    infinite = jnp.full((n, num_pairs), jnp.inf, distances.dtype)
    # A pair's last cell (rows-1, cols-1) is on diagonal rows+cols-2, at row rows-1: read it when it is computed.
    last_diagonal = rows + cols - 2
    last_row = jnp.arange(n)[:, None] == (rows - 1)[None, :]

    def step(k, carry):  # noqa: ANN001, ANN202 (loop body)
        cost_1, length_1, cost_2, length_2, final_cost, final_length = carry  # diagonals k-1 and k-2
        diagonal = jax.lax.dynamic_index_in_dim(diagonals, k, keepdims=False)
        up, up_length = _from_above(cost_1, jnp.inf), _from_above(length_1, 0.0)  # (i-1, j): row i-1 of k-1
        left, left_length = cost_1, length_1  # (i, j-1): row i of diagonal k-1
        # (i-1, j-1): row i-1 of diagonal k-2; the cell (0, 0) starts from a free virtual predecessor.
        corner = _from_above(cost_2, jnp.where(k == 0, 0.0, jnp.inf))
        corner_length = _from_above(length_2, 0.0)
        take_corner = (corner <= left) & (corner <= up)
        take_left = ~take_corner & (left <= up)
        cost = diagonal + jnp.where(take_corner, corner, jnp.where(take_left, left, up))
        length = 1.0 + jnp.where(take_corner, corner_length, jnp.where(take_left, left_length, up_length))
        read = last_row & (last_diagonal == k)[None, :]  # at most one cell per pair, on one step
        final_cost = final_cost + jnp.sum(jnp.where(read, cost, 0.0), axis=0)
        final_length = final_length + jnp.sum(jnp.where(read, length, 0.0), axis=0)
        return cost, length, cost_1, length_1, final_cost, final_length

    start = (infinite, zeros, infinite, zeros, zeros[0], zeros[0])
    *_, cost, length = jax.lax.fori_loop(0, total if num_steps is None else num_steps, step, start)
    return cost / length
