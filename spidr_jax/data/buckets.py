"""Static training shapes: a few bucket lengths chosen from the length distribution, each with its batch size.

Every row goes to the largest bucket length that is not longer than the row (lengths first capped at
``data.max_sample_size``) and is randomly cropped to it, so batches have no padding and the step compiles once
per bucket. Bucket lengths are multiples of the extractor's total stride (320 samples by default), and are chosen
by an exact dynamic program over the distinct (rounded down) row lengths so that the audio cropped away is as
small as possible for the number of shapes allowed.

With ``data.enable_padding`` a row may also be zero-padded up to the next bucket length, when that wastes fewer
samples than cropping it down (`spidr_jax.data.pad_or_crop`): the lengths then minimize cropped plus padded audio.

A bucket's per-device batch is ``data.max_batch_length // length`` (the reference's token budget is per GPU) and
its global batch is that times the number of data-parallel shards, so every batch splits evenly over devices.
Where possible each bucket holds at least one global batch of rows, so that completing a bucket's last batch
repeats few rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spidr_jax.config.run import DataConfig
from spidr_jax.data.audio import SAMPLE_RATE
from spidr_jax.data.pad_or_crop import assign_pad_or_crop, choose_pad_or_crop_lengths

# Marks choices that break a row minimum (audio kept is never negative).
_INFEASIBLE = -1


def choose_bucket_lengths(
    lengths: np.ndarray,
    num_shapes: int,
    *,
    multiple: int,
    rows_needed: Callable[[int], int] | None = None,
) -> list[int]:
    """At most ``num_shapes`` bucket lengths (ascending multiples of ``multiple``) that keep the most audio.

    Each row keeps the largest bucket length <= its length. The smallest bucket is the shortest rounded row, so
    every row has a bucket. With ``rows_needed``, a bucket of length L must receive at least ``rows_needed(L)``
    rows; when no choice satisfies that (a tiny dataset), the constraint is dropped. Ties go to fewer buckets.

    The optimum is exact: ``best[k][j]``, the most audio kept by ``k`` buckets over the ``j`` shortest distinct
    lengths, is the best over ``i`` of ``best[k-1][i]`` plus the audio kept by a bucket at the ``i``-th length
    covering lengths ``i..j-1``. O(num_shapes * n^2) for n distinct lengths (at most max_sample_size / multiple).
    """
    if num_shapes < 1:
        raise ValueError(f"num_shapes must be >= 1, got {num_shapes}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    rounded = (np.asarray(lengths, dtype=np.int64) // multiple) * multiple
    if rounded.size == 0 or rounded.min() <= 0:
        raise ValueError(f"every length must be at least {multiple} samples (one multiple)")
    values, counts = np.unique(rounded, return_counts=True)
    needed = np.zeros(len(values), dtype=np.int64)
    if rows_needed is not None:
        needed = np.array([rows_needed(int(v)) for v in values], dtype=np.int64)
    chosen = _best_lengths(values, counts, num_shapes, needed)
    if chosen is None:
        chosen = _best_lengths(values, counts, num_shapes, np.zeros_like(needed))
    assert chosen is not None  # without a row constraint the single shortest bucket is always feasible
    return chosen


def _best_lengths(values: np.ndarray, counts: np.ndarray, num_shapes: int, needed: np.ndarray) -> list[int] | None:
    """The DP of `choose_bucket_lengths` under per-bucket row minimums; None when nothing is feasible."""
    n = len(values)
    prefix = np.concatenate([[0], np.cumsum(counts)])
    # best[j]: most audio kept covering the j shortest distinct lengths with the current number of buckets.
    best = np.full(n + 1, _INFEASIBLE, dtype=np.int64)
    best[0] = 0
    choices: list[np.ndarray] = []  # per level, the start i of the last bucket for each j
    results: list[tuple[int, int]] = []  # (audio kept, number of buckets) of complete solutions
    for level in range(1, min(num_shapes, n) + 1):
        new_best = np.full(n + 1, _INFEASIBLE, dtype=np.int64)
        start = np.zeros(n + 1, dtype=np.int64)
        for j in range(level, n + 1):
            i = np.arange(level - 1, j)
            rows = prefix[j] - prefix[i]
            feasible = (best[i] > _INFEASIBLE) & (rows >= needed[i])
            total = np.where(feasible, best[i] + values[i] * rows, _INFEASIBLE)
            pick = int(np.argmax(total))
            new_best[j], start[j] = total[pick], i[pick]
        best = new_best
        choices.append(start)
        if best[n] > _INFEASIBLE:
            results.append((int(best[n]), level))
    if not results:
        return None
    # The most audio kept; among equals, the fewest buckets.
    _, level = max(results, key=lambda result: (result[0], -result[1]))
    chosen, j = [], n
    for k in range(level, 0, -1):
        i = int(choices[k - 1][j])
        chosen.append(int(values[i]))
        j = i
    return sorted(chosen)


@dataclass(frozen=True)
class Bucket:
    """One static shape: rows cropped (or padded) to ``length`` samples, ``global_batch`` of them per step."""

    length: int
    batch_per_device: int
    global_batch: int
    num_rows: int


@dataclass(frozen=True)
class BucketStats:
    """The buckets chosen for a dataset, each row's bucket, and how much audio cropping and padding cost.

    ``assignment[r]`` is the bucket index of row ``r``. ``total_samples`` is the audio of all rows,
    ``capped_samples`` what remains after the ``max_sample_size`` cap (cropped by the reference too),
    ``kept_samples`` what remains after cropping to the bucket lengths, and ``padded_samples`` the zeros added to
    rows shorter than their bucket (only with ``data.enable_padding``).
    """

    buckets: tuple[Bucket, ...]
    assignment: np.ndarray
    num_data_shards: int
    total_samples: int
    capped_samples: int
    kept_samples: int
    padded_samples: int = 0

    @property
    def lengths(self) -> list[int]:
        """The bucket lengths, ascending."""
        return [bucket.length for bucket in self.buckets]

    @property
    def crop_fraction(self) -> float:
        """Fraction of the capped audio cropped away to reach the bucket lengths."""
        return 1.0 - self.kept_samples / self.capped_samples

    @property
    def cap_fraction(self) -> float:
        """Fraction of all audio beyond ``max_sample_size`` (random crops, as in the reference)."""
        return 1.0 - self.capped_samples / self.total_samples

    @property
    def padding_fraction(self) -> float:
        """Fraction of the batches' samples that are padding (zero without ``data.enable_padding``)."""
        return self.padded_samples / (self.kept_samples + self.padded_samples)

    def describe(self) -> str:
        """A readable table of the shapes and the audio they keep."""
        hours = 1 / (SAMPLE_RATE * 3600)
        lines = [
            (
                f"{len(self.buckets)} static shapes for {len(self.assignment)} rows "
                f"({self.total_samples * hours:.2f} h of audio, {self.num_data_shards} data shards):"
            ),
            f"  {'samples':>8} {'seconds':>8} {'batch/device':>12} {'global batch':>12} {'rows':>9}",
        ]
        lines.extend(
            f"  {b.length:>8} {b.length / SAMPLE_RATE:>8.2f} {b.batch_per_device:>12} {b.global_batch:>12} "
            f"{b.num_rows:>9}"
            for b in self.buckets
        )
        lines.append(
            f"Cropped to bucket lengths: {self.crop_fraction:.2%} of the audio; padding: "
            f"{f'{self.padding_fraction:.2%} of the batches' if self.padded_samples else 'none'}; "
            f"beyond max_sample_size: {self.cap_fraction:.2%}."
        )
        return "\n".join(lines)


def plan_buckets(
    lengths: np.ndarray,
    cfg: DataConfig,
    *,
    num_data_shards: int,
    num_shapes: int = 8,
    multiple: int = 320,
) -> BucketStats:
    """Bucket lengths, batch sizes and each row's bucket for rows of the given lengths (in samples).

    ``lengths`` must already exclude rows shorter than ``multiple`` (and than ``cfg.min_sample_size``).
    """
    if num_data_shards < 1:
        raise ValueError(f"num_data_shards must be >= 1, got {num_data_shards}")
    raw = np.asarray(lengths, dtype=np.int64)
    capped = np.minimum(raw, cfg.max_sample_size)

    def global_batch(length: int) -> int:
        return (cfg.max_batch_length // length) * num_data_shards

    if cfg.enable_padding:
        bucket_lengths = choose_pad_or_crop_lengths(
            capped, num_shapes, multiple=multiple, max_length=cfg.max_sample_size, rows_needed=global_batch
        )
        assignment = assign_pad_or_crop(capped, bucket_lengths)
    else:
        bucket_lengths = choose_bucket_lengths(capped, num_shapes, multiple=multiple, rows_needed=global_batch)
        assignment = np.searchsorted(np.asarray(bucket_lengths), capped, side="right") - 1
    fitted = np.asarray(bucket_lengths)[assignment]
    num_rows = np.bincount(assignment, minlength=len(bucket_lengths))
    buckets = tuple(
        Bucket(
            length=length,
            batch_per_device=cfg.max_batch_length // length,
            global_batch=global_batch(length),
            num_rows=int(count),
        )
        for length, count in zip(bucket_lengths, num_rows, strict=True)
    )
    return BucketStats(
        buckets=buckets,
        assignment=assignment,
        num_data_shards=num_data_shards,
        total_samples=int(raw.sum()),
        capped_samples=int(capped.sum()),
        kept_samples=int(np.minimum(fitted, capped).sum()),
        padded_samples=int(np.maximum(fitted - capped, 0).sum()),
    )
