"""DTW distances between many pairs of tokens, computed tile by tile on any JAX device, in bounded memory.

Tokens are frame ranges of one array of frames (all files, concatenated). The pairs an ABX task needs cluster in
*blocks* (tokens of one context, or of one speaker): tokens are laid out block by block and cut into *chunks* of
at most ``chunk_frames`` frames that never straddle two blocks. For every pair of chunks that holds a needed token
pair, one matrix product gives the distances between all their frames (a *tile*); the tiles are written into a
fixed-size device buffer, and the frame distance matrix of each needed token pair is read out of its tile (in
place, through strides) by the DTW, in batches of pairs of similar lengths. Each step is a compiled function of a
few padded shapes (tiles of a power-of-two number of frames; DTW batches of 8, 12, 16, 24, 32, ... frames per
token), so the compiled code is reused across chunks, tiles and pairs. On a CPU backend the frames stay in host
memory, where numpy gathers a tile's rows faster than XLA; on an accelerator they live on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.evaluate.dtw import dtw_distances
from spidr_jax.evaluate.frame_distances import finish_distances, tile_distances

__all__ = ["Budget", "TokenPairs", "pair_distances"]


@dataclass(frozen=True)
class Budget:
    """Sizes that bound memory and set the compiled shapes.

    :param chunk_frames: Frames per chunk at most (more if one token is longer).
    :param tile_values: Distances per batch of tiles (R tiles of F x F: R F^2 <= this).
    :param tile_inputs: Frame values gathered per batch of tiles (2 R F D <= this).
    :param buffer_values: Size of the device buffer that holds the tiles waiting for the DTW.
    :param dtw_values: Distance values per DTW batch (P pairs of T x T: P T^2 <= this).
    :param max_dtw_pairs: Pairs per DTW batch at most.
    """

    chunk_frames: int = 256
    tile_values: int = 1 << 22
    tile_inputs: int = 1 << 24
    buffer_values: int = 1 << 25
    dtw_values: int = 1 << 19
    max_dtw_pairs: int = 8192

    @classmethod
    def for_backend(cls, backend: str) -> Budget:
        """Larger batches on accelerators, where one step has more parallel work to fill."""
        if backend == "cpu":
            return cls()
        return cls(tile_values=1 << 24, tile_inputs=1 << 26, buffer_values=1 << 28, dtw_values=1 << 26,
                   max_dtw_pairs=1 << 18)  # fmt: skip


@dataclass(frozen=True)
class TokenPairs:
    """Ordered token pairs (x, y) to measure, and where the tokens are.

    :param first: (N,) index of each token's first frame in the frames array.
    :param length: (N,) frames per token (at least 1).
    :param block: (N,) block of each token; pairs never cross blocks (they may: it only costs speed).
    :param rank: (N,) position of each token in the layout (tokens that pair often should be close).
    :param x: (P,) first tokens; ``y``: (P,) second tokens (the DTW's rows and columns).
    """

    first: np.ndarray
    length: np.ndarray
    block: np.ndarray
    rank: np.ndarray
    x: np.ndarray
    y: np.ndarray


def _power_of_two(values: np.ndarray, minimum: int) -> np.ndarray:
    """Smallest power of two >= each value, and >= ``minimum``."""
    values = np.maximum(np.asarray(values, np.int64), minimum)
    return (1 << np.ceil(np.log2(values)).astype(np.int64)).astype(np.int64)


def _dtw_size(frames: np.ndarray) -> np.ndarray:
    """The padded size of a DTW batch for pairs of at most ``frames`` frames: 8, 12, 16, 24, 32, 48, 64, ...

    Sizes between the powers of two keep the padding below a half, for two more compilations at most.
    """
    power = _power_of_two(frames, 8)
    three_quarters = power // 4 * 3
    return np.where((np.asarray(frames) <= three_quarters) & (power > 8), three_quarters, power)


def _chunks(tokens: np.ndarray, pairs: TokenPairs, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the laid-out ``tokens`` into chunks: (chunk of each token, its first row in the chunk, chunk sizes)."""
    lengths, blocks = pairs.length[tokens], pairs.block[tokens]
    chunk_of = np.empty(len(tokens), np.int64)
    offset_of = np.empty(len(tokens), np.int64)
    sizes, chunk, filled, block = [], -1, limit, None
    for i, (length, token_block) in enumerate(zip(lengths.tolist(), blocks.tolist(), strict=True)):
        if token_block != block or filled + length > limit:
            sizes.append(0)
            chunk, filled, block = chunk + 1, 0, token_block
        chunk_of[i], offset_of[i] = chunk, filled
        filled += length
        sizes[-1] = filled
    return chunk_of, offset_of, np.asarray(sizes, np.int64)


@dataclass(frozen=True)
class _Plan:
    """Where every pair reads its distances: its tile, and its first row and column inside it."""

    tile_first: np.ndarray  # (T,) first chunk of each tile
    tile_second: np.ndarray  # (T,) second chunk
    tile_size: np.ndarray  # (T,) frames per side, a power of two
    pair_tile: np.ndarray  # (P,) tile of each pair
    pair_row: np.ndarray  # (P,) the pair's first distance in the tile, as (row, column) of the tile
    pair_col: np.ndarray
    pair_transposed: np.ndarray  # (P,) the pair's x is in the tile's second chunk
    chunk_frames: list[np.ndarray]  # frame indices of each chunk


def _plan(pairs: TokenPairs, budget: Budget) -> _Plan:
    """Lay out the tokens of the pairs in chunks, and find the tile and position of every pair."""
    tokens = np.unique(np.concatenate([pairs.x, pairs.y]))
    tokens = tokens[np.lexsort((tokens, pairs.rank[tokens], pairs.block[tokens]))]
    limit = max(budget.chunk_frames, int(pairs.length[tokens].max()))
    chunk_of, offset_of, sizes = _chunks(tokens, pairs, limit)
    where = np.full(len(pairs.first), -1, np.int64)
    where[tokens] = np.arange(len(tokens))
    cx, cy = chunk_of[where[pairs.x]], chunk_of[where[pairs.y]]
    ox, oy = offset_of[where[pairs.x]], offset_of[where[pairs.y]]
    transposed = cx > cy  # each unordered pair of chunks is one tile, read transposed from the other side
    low, high = np.minimum(cx, cy), np.maximum(cx, cy)
    tile_keys, pair_tile = np.unique(low * len(sizes) + high, return_inverse=True)
    tiles = np.stack([tile_keys // len(sizes), tile_keys % len(sizes)], axis=1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    frames_of_tokens = [np.arange(f, f + n) for f, n in zip(pairs.first[tokens], pairs.length[tokens], strict=True)]
    flat = np.concatenate(frames_of_tokens) if frames_of_tokens else np.zeros(0, np.int64)
    chunk_frames = [flat[starts[c] : starts[c + 1]] for c in range(len(sizes))]
    return _Plan(
        tile_first=tiles[:, 0],
        tile_second=tiles[:, 1],
        tile_size=_power_of_two(np.maximum(sizes[tiles[:, 0]], sizes[tiles[:, 1]]), 16),
        pair_tile=pair_tile.ravel(),
        pair_row=np.where(transposed, oy, ox),
        pair_col=np.where(transposed, ox, oy),
        pair_transposed=transposed,
        chunk_frames=chunk_frames,
    )


@functools.partial(jax.jit, static_argnames=("distance",), donate_argnums=(0,))
def _write_tiles(buffer: jax.Array, offset: jax.Array, x: jax.Array, y: jax.Array, *, distance: str) -> jax.Array:
    """Write the (R, F, F) distances between the frames of ``x`` and of ``y`` into ``buffer`` at ``offset``."""
    tiles = tile_distances(distance, x, y)
    return jax.lax.dynamic_update_slice(buffer, tiles.reshape(-1), (offset,))


@functools.partial(jax.jit, static_argnames=("distance",), donate_argnums=(0,))
def _gather_and_write_tiles(
    buffer: jax.Array, offset: jax.Array, frames: jax.Array, first: jax.Array, second: jax.Array, *, distance: str
) -> jax.Array:
    """``_write_tiles`` of the frames indexed by ``first`` and ``second``, gathered on the device."""
    tiles = tile_distances(distance, frames[first], frames[second])
    return jax.lax.dynamic_update_slice(buffer, tiles.reshape(-1), (offset,))


@functools.partial(jax.jit, static_argnames=("size", "distance"))
def _dtw_from_buffer(
    buffer: jax.Array, reads: jax.Array, num_steps: jax.Array, *, size: int, distance: str
) -> jax.Array:
    """DTW of pairs whose (size x size) distance matrices are read from ``buffer`` through strides.

    ``reads`` (5, P) int32: each pair's first distance in the buffer, its row and column strides, its lengths.
    """
    start, row_stride, col_stride, rows, cols = reads
    i = jnp.arange(size, dtype=jnp.int32)[:, None, None]
    j = jnp.arange(size, dtype=jnp.int32)[None, :, None]
    index = jnp.clip(start[None, None, :] + i * row_stride + j * col_stride, 0, buffer.shape[0] - 1)
    return dtw_distances(finish_distances(distance, buffer[index]), rows, cols, num_steps)


class _Runner:
    """Fills the tile buffer batch by batch and runs the DTW of the pairs whose tiles it holds."""

    def __init__(
        self, frames: np.ndarray | jax.Array, pairs: TokenPairs, plan: _Plan, distance: str, budget: Budget
    ) -> None:
        self.frames, self.pairs, self.plan, self.distance, self.budget = frames, pairs, plan, distance, budget
        self.buffer = jnp.zeros(budget.buffer_values, jnp.float32)
        self.result = np.full(len(pairs.x), np.nan, np.float32)
        self.tile_offset = np.full(len(plan.tile_size), -1, np.int64)
        self.pairs_by_tile = np.argsort(plan.pair_tile, kind="stable")
        self.tile_pair_start = np.searchsorted(plan.pair_tile[self.pairs_by_tile], np.arange(len(plan.tile_size)))
        self.tile_pair_start = np.r_[self.tile_pair_start, len(pairs.x)]

    def write(self, tiles: np.ndarray, size: int, offset: int, batch: int) -> None:
        """Compute a batch of tiles of ``size`` frames (padded to ``batch`` tiles) into the buffer at ``offset``."""
        first = np.zeros((batch, size), np.int32)
        second = np.zeros((batch, size), np.int32)
        for row, tile in enumerate(tiles):
            a = self.plan.chunk_frames[self.plan.tile_first[tile]]
            b = self.plan.chunk_frames[self.plan.tile_second[tile]]
            first[row, : len(a)], second[row, : len(b)] = a, b
        if isinstance(self.frames, np.ndarray):  # host memory (a CPU backend): numpy gathers rows faster than XLA
            x, y = self.frames[first], self.frames[second]
            self.buffer = _write_tiles(self.buffer, np.int32(offset), x, y, distance=self.distance)
        else:
            self.buffer = _gather_and_write_tiles(
                self.buffer, np.int32(offset), self.frames, first, second, distance=self.distance
            )
        self.tile_offset[tiles] = offset + np.arange(len(tiles)) * size * size

    def flush(self, tiles: np.ndarray) -> int:
        """Run the DTW of every pair of ``tiles`` (all in the buffer); returns how many pairs were measured."""
        plan, pairs = self.plan, self.pairs
        chosen = np.concatenate([self.pairs_by_tile[self.tile_pair_start[t] : self.tile_pair_start[t + 1]]
                                 for t in tiles])  # fmt: skip
        size = plan.tile_size[plan.pair_tile[chosen]]
        start = self.tile_offset[plan.pair_tile[chosen]] + plan.pair_row[chosen] * size + plan.pair_col[chosen]
        transposed = plan.pair_transposed[chosen]
        row_stride, col_stride = np.where(transposed, 1, size), np.where(transposed, size, 1)
        rows, cols = pairs.length[pairs.x[chosen]], pairs.length[pairs.y[chosen]]
        shape = _dtw_size(np.maximum(rows, cols))
        order = np.lexsort((rows + cols, shape))
        for dtw_size in np.unique(shape):
            group = order[shape[order] == dtw_size]
            batch = int(min(self.budget.max_dtw_pairs, max(64, self.budget.dtw_values // (dtw_size * dtw_size))))
            for begin in range(0, len(group), batch):
                part = group[begin : begin + batch]
                steps = int((rows[part] + cols[part]).max() - 1)
                reads = np.ones((5, batch), np.int32)  # padding: 1 x 1 pairs reading the buffer's start
                reads[0] = 0
                for row, values in enumerate((start, row_stride, col_stride, rows, cols)):
                    reads[row, : len(part)] = values[part]
                distances = _dtw_from_buffer(
                    self.buffer, reads, np.int32(steps), size=int(dtw_size), distance=self.distance
                )
                self.result[chosen[part]] = np.asarray(distances)[: len(part)]
        return len(chosen)


def _batches(plan: _Plan, budget: Budget, depth: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """(tiles, frames per side, batch size) of each batch of tiles, tiles of one size together."""
    for size in np.unique(plan.tile_size):
        tiles = np.flatnonzero(plan.tile_size == size)
        batch = int(max(1, min(budget.tile_values // (size * size), budget.tile_inputs // (2 * size * depth))))
        batch = min(int(_power_of_two(batch // 2 + 1, 1)), int(_power_of_two(len(tiles), 1)))  # few shapes
        for begin in range(0, len(tiles), batch):
            yield tiles[begin : begin + batch], int(size), batch


def pair_distances(
    frames: np.ndarray | jax.Array,
    pairs: TokenPairs,
    distance: str,
    *,
    budget: Budget | None = None,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Normalised DTW distance of every pair, (P,) float32, with ``x``'s frames as rows.

    :param frames: (F, D) prepared frames (see ``frame_distances.prepare_frames``), or (F,) units: a numpy array
        (gathered on the host, best on a CPU backend) or a device array (gathered on the device).
    :param distance: Frame distance, one of ``frame_distances.DISTANCES``.
    :param advance: Called with the number of pairs measured after each step (progress).
    """
    if len(pairs.x) == 0:
        return np.zeros(0, np.float32)
    budget = budget or Budget.for_backend(jax.default_backend())
    plan = _plan(pairs, budget)
    runner = _Runner(frames, pairs, plan, distance, budget)
    depth = frames.shape[1] if frames.ndim == 2 else 1
    pending: list[np.ndarray] = []
    used = 0
    for tiles, size, batch in _batches(plan, budget, depth):
        need = batch * size * size
        if need > budget.buffer_values:
            raise ValueError(f"a batch of {batch} tiles of {size} frames does not fit the buffer")
        if used + need > budget.buffer_values:
            measured = runner.flush(np.concatenate(pending))
            if advance is not None:
                advance(measured)
            pending, used = [], 0
        runner.write(tiles, size, used, batch)
        pending.append(tiles)
        used += need
    if pending:
        measured = runner.flush(np.concatenate(pending))
        if advance is not None:
            advance(measured)
    return runner.result
