"""The global batch plan: which rows form batch ``n``, and in which bucket, as a pure function of (seed, n).

Every host computes the same plan from the same rows, so no coordination is needed: a host loads only its slice
of each global batch. Training repeats epochs forever; epoch ``e`` is drawn from a generator seeded by
``(seed, e)``: rows are shuffled within each bucket and chunked into that bucket's global batch size; a last
partial batch is completed with other random rows of the bucket (or dropped with ``drop_last``); then the order
of all the epoch's batches is shuffled. Every epoch has the same number of batches, so batch ``n`` is batch
``n % batches_per_epoch`` of epoch ``n // batches_per_epoch`` and a run can resume at any step.

Validation makes one pass in manifest order instead: every row exactly once, and each bucket's last partial
batch filled up with repeated rows that its ``real`` flags mark as fillers, to be left out of the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Tag of the plan's random stream, kept apart from the crop and mask streams drawn from the same seed.
PLAN_STREAM = 0


@dataclass(frozen=True)
class PlannedBatch:
    """Global batch ``step``: ``rows`` (indices into the scanned rows), cropped to ``length`` samples.

    ``epoch`` and ``index`` locate it (index within the epoch, or within the validation pass). ``real`` is None
    in training; in validation it flags, per row, whether the row counts (False for fillers).
    """

    step: int
    epoch: int
    index: int
    bucket: int
    length: int
    rows: np.ndarray
    real: np.ndarray | None = None


def _check_buckets(assignment: np.ndarray, lengths: Sequence[int], global_batches: Sequence[int]) -> None:
    if len(lengths) != len(global_batches):
        raise ValueError(f"{len(lengths)} bucket lengths but {len(global_batches)} batch sizes")
    if min(global_batches, default=1) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(global_batches)}")
    if assignment.size and (assignment.min() < 0 or assignment.max() >= len(lengths)):
        raise ValueError(f"bucket indices must lie in [0, {len(lengths)})")


class EpochPlan:
    """Shuffled, repeating epochs of fixed-size global batches (training).

    Args:
        assignment: (num_rows,) the bucket index of every row.
        lengths: the bucket lengths in samples.
        global_batches: the global batch size of every bucket.
        seed: the data seed (>= 0).
        drop_last: drop each bucket's last partial batch instead of completing it.

    """

    def __init__(
        self,
        assignment: np.ndarray,
        lengths: Sequence[int],
        global_batches: Sequence[int],
        *,
        seed: int,
        drop_last: bool,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.assignment = np.asarray(assignment, dtype=np.int64)
        _check_buckets(self.assignment, lengths, global_batches)
        self.lengths = [int(length) for length in lengths]
        self.global_batches = [int(size) for size in global_batches]
        self.seed = seed
        self.drop_last = drop_last
        # Row ids of each bucket, ascending: the starting order that each epoch's shuffle permutes.
        self._members = [np.flatnonzero(self.assignment == b) for b in range(len(self.lengths))]
        counts = [len(members) for members in self._members]
        per_bucket = [
            n // size if drop_last else -(-n // size) for n, size in zip(counts, self.global_batches, strict=True)
        ]
        self.batches_per_epoch = sum(per_bucket)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"no full batch: {len(self.assignment)} rows cannot fill a batch of any bucket "
                f"(sizes {self.global_batches}) and data.drop_last is set"
            )
        self._cache: tuple[int, list[tuple[int, np.ndarray]]] | None = None

    @property
    def num_batches(self) -> int | None:
        """None: training batches never run out."""
        return None

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of batch ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, index = divmod(step, self.batches_per_epoch)
        return epoch, index

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The (bucket, row ids) of every batch of an epoch, in order; the same for the same (seed, epoch)."""
        cached = self._cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, PLAN_STREAM, epoch])
        batches: list[tuple[int, np.ndarray]] = []
        for bucket, (members, size) in enumerate(zip(self._members, self.global_batches, strict=True)):
            if len(members) == 0:
                continue
            shuffled = rng.permutation(members)
            num_full = len(shuffled) // size
            batches.extend((bucket, chunk) for chunk in shuffled[: num_full * size].reshape(num_full, size))
            rest = shuffled[num_full * size :]
            if len(rest) and not self.drop_last:
                batches.append((bucket, np.concatenate([rest, _completion(rng, shuffled, len(rest), size)])))
        order = rng.permutation(len(batches))
        planned = [batches[i] for i in order]
        self._cache = (epoch, planned)  # one assignment: safe to read from another thread
        return planned

    def batch(self, step: int) -> PlannedBatch:
        """Global batch ``step`` (0-based, counted across epochs)."""
        epoch, index = self.locate(step)
        bucket, rows = self.epoch(epoch)[index]
        return PlannedBatch(step=step, epoch=epoch, index=index, bucket=bucket, length=self.lengths[bucket], rows=rows)

    def __getstate__(self) -> dict:
        # Workers rebuild their own cache; do not ship the parent's through pickling.
        return {**self.__dict__, "_cache": None}


def _completion(rng: np.random.Generator, shuffled: np.ndarray, num_rest: int, size: int) -> np.ndarray:
    """Rows completing a partial batch of ``num_rest`` rows (the tail of ``shuffled``) to ``size``.

    Rows not in the partial batch are drawn first, without replacement; only a bucket smaller than one batch
    needs rows drawn with replacement as well.
    """
    others = shuffled[: len(shuffled) - num_rest]
    missing = size - num_rest
    picked = rng.choice(others, size=min(missing, len(others)), replace=False) if len(others) else others
    if len(picked) < missing:
        picked = np.concatenate([picked, rng.choice(shuffled, size=missing - len(picked), replace=True)])
    return picked


class SinglePassPlan:
    """One pass over every row in manifest order, bucket by bucket (validation); deterministic, no shuffling.

    A bucket's last partial batch is filled up to the batch size by repeating its rows cyclically; ``real``
    flags the fillers False so that losses and statistics can leave them out. Arguments as for `EpochPlan`.
    """

    def __init__(self, assignment: np.ndarray, lengths: Sequence[int], global_batches: Sequence[int]) -> None:
        self.assignment = np.asarray(assignment, dtype=np.int64)
        _check_buckets(self.assignment, lengths, global_batches)
        self.lengths = [int(length) for length in lengths]
        self.global_batches = [int(size) for size in global_batches]
        self._batches: list[tuple[int, np.ndarray, np.ndarray]] = []
        for bucket, size in enumerate(self.global_batches):
            members = np.flatnonzero(self.assignment == bucket)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                real = np.arange(size) < len(chunk)
                self._batches.append((bucket, np.resize(chunk, size), real))

    @property
    def num_batches(self) -> int:
        """The number of batches in the pass."""
        return len(self._batches)

    @property
    def batches_per_epoch(self) -> int:
        """The number of batches in the pass (one epoch)."""
        return len(self._batches)

    def batch(self, step: int) -> PlannedBatch:
        """Batch ``step`` of the pass."""
        if not 0 <= step < len(self._batches):
            raise IndexError(f"validation batch {step} out of range [0, {len(self._batches)})")
        bucket, rows, real = self._batches[step]
        return PlannedBatch(
            step=step, epoch=0, index=step, bucket=bucket, length=self.lengths[bucket], rows=rows, real=real
        )
