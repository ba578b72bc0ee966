"""Static shapes and the global batch plan: optimal bucket lengths, batch sizes, epochs, validation passes."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, replace

import numpy as np
import pytest

from spidr_jax.config.checks import check_data
from spidr_jax.config.loading import config_from_mapping
from spidr_jax.config.model import ConfigError
from spidr_jax.config.run import DataConfig
from spidr_jax.data.batch_plan import EpochPlan, SinglePassPlan
from spidr_jax.data.buckets import choose_bucket_lengths, plan_buckets

CFG = DataConfig(min_sample_size=0, max_sample_size=32_000, max_batch_length=64_000)


def kept_audio(lengths: np.ndarray, buckets: list[int]) -> int:
    """Audio kept when each row is cropped to the largest bucket <= its length."""
    index = np.searchsorted(np.asarray(buckets), lengths, side="right") - 1
    assert index.min() >= 0
    return int(np.asarray(buckets)[index].sum())


def brute_force(rounded: np.ndarray, num_shapes: int, needed: dict[int, int]) -> tuple[int, int]:
    """(most audio kept, fewest buckets achieving it) over every feasible choice of bucket lengths."""
    values = sorted(set(rounded.tolist()))
    best: tuple[int, int] | None = None
    for size in range(1, min(num_shapes, len(values)) + 1):
        for rest in itertools.combinations(values[1:], size - 1):
            buckets = [values[0], *rest]
            index = np.searchsorted(np.asarray(buckets), rounded, side="right") - 1
            counts = np.bincount(index, minlength=len(buckets))
            if any(count < needed.get(length, 0) for length, count in zip(buckets, counts, strict=True)):
                continue
            kept = kept_audio(rounded, buckets)
            if best is None or kept > best[0]:
                best = (kept, size)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(12))
def test_bucket_lengths_are_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    multiple = 10
    lengths = rng.integers(10, 200, size=int(rng.integers(3, 25)))
    num_shapes = int(rng.integers(1, 5))
    rounded = lengths // multiple * multiple
    chosen = choose_bucket_lengths(lengths, num_shapes, multiple=multiple)
    assert chosen == sorted(chosen)
    assert len(chosen) <= num_shapes
    assert all(length % multiple == 0 for length in chosen)
    assert (kept_audio(rounded, chosen), len(chosen)) == brute_force(rounded, num_shapes, {})

    # With a minimum number of rows per bucket (a global batch), still optimal among the feasible choices.
    def needed(length: int) -> int:
        return 1 + 100 // length

    constrained = choose_bucket_lengths(lengths, num_shapes, multiple=multiple, rows_needed=needed)
    index = np.searchsorted(np.asarray(constrained), rounded, side="right") - 1
    counts = np.bincount(index, minlength=len(constrained))
    table = {int(v): needed(int(v)) for v in set(rounded.tolist())}
    if all(count >= needed(length) for length, count in zip(constrained, counts, strict=True)):
        expected = brute_force(rounded, num_shapes, table)
        assert (kept_audio(rounded, constrained), len(constrained)) == expected
    else:  # infeasible: the constraint is dropped
        assert constrained == chosen


def test_bucket_lengths_edge_cases() -> None:
    assert choose_bucket_lengths(np.array([650, 960, 1000]), 8, multiple=320) == [640, 960]
    assert choose_bucket_lengths(np.array([700] * 5), 3, multiple=320) == [640]
    # Too few rows for any bucket to hold a batch: the row minimum is dropped.
    assert choose_bucket_lengths(np.array([700, 1000]), 2, multiple=320, rows_needed=lambda _: 10) == [640, 960]
    with pytest.raises(ValueError, match="at least 320"):
        choose_bucket_lengths(np.array([100, 700]), 2, multiple=320)
    with pytest.raises(ValueError, match="num_shapes"):
        choose_bucket_lengths(np.array([700]), 0, multiple=320)


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_plan_buckets_shapes(shards: int) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2_000, 50_000, size=3_000)
    stats = plan_buckets(lengths, CFG, num_data_shards=shards, num_shapes=5)
    assert 1 <= len(stats.buckets) <= 5
    capped = np.minimum(lengths, CFG.max_sample_size)
    for index, bucket in enumerate(stats.buckets):
        assert bucket.length % 320 == 0
        assert bucket.batch_per_device == CFG.max_batch_length // bucket.length
        assert bucket.global_batch == bucket.batch_per_device * shards
        assert bucket.global_batch % shards == 0
        members = capped[stats.assignment == index]
        assert bucket.num_rows == len(members) >= bucket.global_batch
        assert (members >= bucket.length).all()
        if index + 1 < len(stats.buckets):  # the largest bucket that fits
            assert (members < stats.buckets[index + 1].length).all()
    kept = sum(bucket.length * bucket.num_rows for bucket in stats.buckets)
    assert stats.kept_samples == kept
    assert stats.crop_fraction == pytest.approx(1 - kept / capped.sum())
    assert stats.cap_fraction == pytest.approx(1 - capped.sum() / lengths.sum())
    assert 0 < stats.crop_fraction < 0.1
    assert stats.padding_fraction == 0
    text = stats.describe()
    assert f"{stats.crop_fraction:.2%}" in text
    assert "padding: none" in text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_batch_length": 10_000}, r"data.max_batch_length \(10000\) must be >= data.max_sample_size \(32000\)"),
        ({"min_sample_size": 40_000}, r"data.min_sample_size \(40000\) must be <= data.max_sample_size"),
        ({"max_sample_size": 0}, "data.max_sample_size"),
        ({"max_batch_length": -1}, "data.max_batch_length"),
        ({"min_sample_size": -5}, "data.min_sample_size"),
        ({"num_workers": -1}, "data.num_workers"),
    ],
)
def test_config_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        check_data(replace(CFG, **change))
    with pytest.raises(ValueError, match=field):  # where a run's config is loaded
        config_from_mapping({"data": asdict(replace(CFG, **change))})


def make_plan(*, seed: int = 0, drop_last: bool = False) -> EpochPlan:
    # Buckets of 23, 10 and 3 rows with batches of 4, 5 and 4 (the last smaller than one batch).
    assignment = np.array([0] * 23 + [1] * 10 + [2] * 3)
    np.random.default_rng(1).shuffle(assignment)
    return EpochPlan(assignment, [640, 960, 1280], [4, 5, 4], seed=seed, drop_last=drop_last)


def test_plan_is_a_pure_function_of_seed_and_step() -> None:
    plan, again, other = make_plan(), make_plan(), make_plan(seed=1)
    assert plan.batches_per_epoch == 6 + 2 + 1
    for step in [0, 3, 8, 9, 17, 40]:
        a, b = plan.batch(step), again.batch(step)
        assert (a.epoch, a.index, a.bucket, a.length) == (b.epoch, b.index, b.bucket, b.length)
        np.testing.assert_array_equal(a.rows, b.rows)
    steps = range(2 * plan.batches_per_epoch)
    assert [plan.batch(s).rows.tolist() for s in steps] != [other.batch(s).rows.tolist() for s in steps]
    # Epochs differ from each other, and the cache does not make results depend on the order of requests.
    first = [plan.batch(s).rows.tolist() for s in range(9)]
    second = [plan.batch(s).rows.tolist() for s in range(9, 18)]
    assert first != second
    assert [make_plan().batch(s).rows.tolist() for s in reversed(range(9))] == first[::-1]
    assert plan.locate(20) == (2, 2)


def test_epoch_covers_every_row_once_plus_completions() -> None:
    plan = make_plan()
    for epoch in range(3):
        batches = plan.epoch(epoch)
        seen: Counter[int] = Counter()
        for bucket, rows in batches:
            assert len(rows) == plan.global_batches[bucket]
            assert (plan.assignment[rows] == bucket).all()  # completions come from the same bucket
            seen.update(rows.tolist())
        assert set(seen) == set(range(len(plan.assignment)))
        # Bucket 0: 23 rows, one completion repeat; bucket 1: full batches; bucket 2: 3 rows + 1 repeat.
        repeats = {row: count for row, count in seen.items() if count > 1}
        assert sum(count - 1 for count in repeats.values()) == 2
        assert {int(plan.assignment[row]) for row in repeats} == {0, 2}
        # A partial batch is completed with rows it does not already hold (when the bucket has enough).
        for bucket, rows in batches:
            if bucket == 0:
                assert len(set(rows.tolist())) == len(rows)


def test_drop_last_drops_partial_batches() -> None:
    plan = make_plan(drop_last=True)
    assert plan.batches_per_epoch == 5 + 2
    batches = plan.epoch(0)
    rows = np.concatenate([rows for _, rows in batches])
    assert len(rows) == len(set(rows.tolist())) == 30
    assert {bucket for bucket, _ in batches} == {0, 1}
    with pytest.raises(ValueError, match=r"data.drop_last"):
        EpochPlan(np.zeros(3, dtype=int), [640], [4], seed=0, drop_last=True)


def test_single_pass_plan_flags_fillers() -> None:
    assignment = np.array([0] * 7 + [1] * 2 + [0] * 2)
    plan = SinglePassPlan(assignment, [640, 960], [4, 4])
    assert plan.num_batches == 3 + 1
    real_rows = []
    for step in range(plan.num_batches):
        batch = plan.batch(step)
        assert len(batch.rows) == 4
        assert batch.real is not None
        real_rows.extend(batch.rows[batch.real].tolist())
        assert (assignment[batch.rows] == batch.bucket).all()
    assert sorted(real_rows) == list(range(len(assignment)))
    assert plan.batch(2).real.tolist() == [True, False, False, False]
    with pytest.raises(IndexError):
        plan.batch(plan.num_batches)
