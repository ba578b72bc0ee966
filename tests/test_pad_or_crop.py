"""Static lengths for padded batches: each row padded up or cropped down, the lengths wasting least (exact)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from spidr_jax.config.run import DataConfig
from spidr_jax.data.buckets import plan_buckets
from spidr_jax.data.pad_or_crop import assign_pad_or_crop, choose_pad_or_crop_lengths


def waste(lengths: np.ndarray, buckets: list[int]) -> int:
    """Samples cropped plus samples padded when each row goes to the bucket `assign_pad_or_crop` picks."""
    fitted = np.asarray(buckets)[assign_pad_or_crop(lengths, buckets)]
    return int(np.abs(fitted - lengths).sum())


def test_each_row_goes_to_the_nearer_bucket() -> None:
    buckets = [100, 200, 400]
    lengths = np.array([40, 100, 140, 150, 160, 200, 390, 500])
    np.testing.assert_array_equal(assign_pad_or_crop(lengths, buckets), [0, 0, 0, 0, 1, 1, 2, 2])
    # A tie (150: 50 cropped or 50 padded) is cropped; below the shortest: padded; above the longest: cropped.


@pytest.mark.parametrize("seed", range(4))
def test_lengths_are_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, 30) * 10 + rng.integers(0, 10, 30)
    candidates = sorted({*(lengths // 10 * 10).tolist(), *(-(-lengths // 10) * 10).tolist()} - {0})
    for num_shapes in (1, 2, 3):
        best = min(
            (waste(lengths, list(combo)), k)
            for k in range(1, num_shapes + 1)
            for combo in itertools.combinations(candidates, k)
        )
        chosen = choose_pad_or_crop_lengths(lengths, num_shapes, multiple=10, max_length=10_000)
        assert (waste(lengths, chosen), len(chosen)) == best
        assert all(length % 10 == 0 for length in chosen)


def test_row_minimums_and_the_longest_length() -> None:
    lengths = np.array([100] * 3 + [300] * 10 + [1000] * 2)
    # Free: one length per distinct row length, no waste.
    assert choose_pad_or_crop_lengths(lengths, 3, multiple=100, max_length=10_000) == [100, 300, 1000]
    # At least 4 rows padded up to (or already at) each length: the 3 short rows go up to 300, the 2 long ones
    # come down to it.
    chosen = choose_pad_or_crop_lengths(lengths, 3, multiple=100, max_length=10_000, rows_needed=lambda _: 4)
    assert chosen == [300]
    # Lengths never exceed max_length (rounded down to the multiple): longer rows are cropped to it.
    assert choose_pad_or_crop_lengths(lengths, 3, multiple=100, max_length=950) == [100, 300, 900]
    # Nothing satisfies the minimum: it is dropped.
    assert choose_pad_or_crop_lengths(lengths, 3, multiple=100, max_length=10_000, rows_needed=lambda _: 99) == [
        100, 300, 1000,
    ]  # fmt: skip


def test_plan_buckets_with_padding_counts_padding_and_cropping() -> None:
    cfg = DataConfig(min_sample_size=0, max_sample_size=32_000, max_batch_length=64_000, enable_padding=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2_000, 40_000, 500)
    stats = plan_buckets(lengths, cfg, num_data_shards=2, num_shapes=4)
    capped = np.minimum(lengths, 32_000)
    fitted = np.asarray(stats.lengths)[stats.assignment]
    assert stats.padded_samples == int(np.maximum(fitted - capped, 0).sum()) > 0
    assert stats.kept_samples == int(np.minimum(fitted, capped).sum())
    assert stats.padding_fraction == pytest.approx(stats.padded_samples / fitted.sum())
    assert all(b.global_batch == 2 * (64_000 // b.length) for b in stats.buckets)
    cropped = plan_buckets(lengths, replace(cfg, enable_padding=False), num_data_shards=2, num_shapes=4)
    assert cropped.padded_samples == 0
    assert stats.crop_fraction + stats.padded_samples / stats.capped_samples < cropped.crop_fraction
    assert "padding: " in stats.describe()
    assert "of the batches" in stats.describe()
