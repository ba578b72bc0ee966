"""Span masks for masked prediction, drawn on the host with numpy.

Same semantics as the reference's span masking (`compute_mask_indices` and `MaskGenerator`), but the result is a
dense boolean mask rather than an array of masked positions:

- the number of spans in a row is `int(mask_prob * frames / mask_length + u)` with `u ~ U[0, 1)` (probabilistic
  rounding), at least `min_masks`;
- span lengths follow one of four strategies ("static", "uniform", "normal", "poisson");
- spans either overlap freely (distinct random starts) or are placed without overlap, `min_space` frames apart;
- spans are clipped to the row's valid frames;
- every row of a batch ends with the same number of masked frames: rows with more are randomly thinned down to the
  batch minimum, so that masked frames can be gathered into a dense (batch, count) array.

Deliberate differences, on inputs where the reference raises instead:

- a row with zero spans (possible only with `min_masks=0`, as for channel masks) gets no masked frames;
- in no-overlap mode with `min_space=0`, a span that exactly fills its free interval is placed at the interval start.
"""

from __future__ import annotations

import typing

import numpy as np

from spidr_jax.config.run import MaskingConfig, MaskingStrategy

MASK_TYPES = typing.get_args(MaskingStrategy)


def span_lengths(
    rng: np.random.Generator, shape: tuple[int, ...], *, mask_length: int, mask_type: str, mask_other: float
) -> np.ndarray:
    """Span lengths (int64) drawn with one of the four strategies.

    static: all `mask_length`; uniform: integers in [int(mask_other), 2 * mask_length]; normal: round(N(mask_length,
    mask_other)), at least 1; poisson: Poisson with a rate drawn uniformly in [0, mask_length) per span.
    """
    match mask_type:
        case "static":
            return np.full(shape, mask_length, dtype=np.int64)
        case "uniform":
            return rng.integers(int(mask_other), 2 * mask_length + 1, size=shape, dtype=np.int64)
        case "normal":
            return np.maximum(np.round(rng.normal(mask_length, mask_other, size=shape)), 1).astype(np.int64)
        case "poisson":
            return rng.poisson(rng.random(shape) * mask_length).astype(np.int64)
    raise ValueError(f"unknown mask_type {mask_type!r}; expected one of {', '.join(MASK_TYPES)}")


def _check_span_lengths(mask_type: str, mask_length: int, mask_other: float) -> None:
    """Raise ValueError for a span length distribution that cannot be drawn from."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask_type {mask_type!r}; expected one of {', '.join(MASK_TYPES)}")
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    if mask_type in {"uniform", "normal"} and not (np.isfinite(mask_other) and mask_other >= 0):
        # uniform: the shortest span length; normal: the standard deviation of the span length.
        raise ValueError(f"mask_other must be a finite number >= 0 for mask_type {mask_type!r}, got {mask_other}")
    if mask_type == "uniform" and int(mask_other) > 2 * mask_length:
        raise ValueError(f"mask_other ({mask_other}) must be <= 2 * mask_length ({2 * mask_length}) for 'uniform'")


def _check_span_counts(batch_size: int, num_frames: int, mask_prob: float, min_masks: int, min_space: int) -> None:
    """Raise ValueError for a batch shape or span counts the masking cannot honor."""
    if batch_size < 0 or num_frames < 0:
        raise ValueError(f"batch_size and num_frames must be >= 0, got {batch_size} and {num_frames}")
    if not np.isfinite(mask_prob) or mask_prob < 0:
        raise ValueError(f"mask_prob must be a finite number >= 0, got {mask_prob}")
    if min_masks < 0:
        raise ValueError(f"min_masks must be >= 0, got {min_masks}")
    if min_space < 0:
        raise ValueError(f"min_space must be >= 0, got {min_space}")


def _valid_lengths(valid_frames: np.ndarray | None, batch_size: int, num_frames: int) -> np.ndarray:
    """Per-row number of valid frames as int64, checked against the batch shape."""
    if valid_frames is None:
        return np.full(batch_size, num_frames, dtype=np.int64)
    valid = np.asarray(valid_frames)
    if valid.shape != (batch_size,):
        raise ValueError(f"valid_frames must have shape ({batch_size},), got {valid.shape}")
    if not np.issubdtype(valid.dtype, np.integer) and not np.array_equal(valid, np.round(valid)):
        raise ValueError("valid_frames must hold whole numbers of frames")
    valid = valid.astype(np.int64)
    if valid.size and (valid.min() < 0 or valid.max() > num_frames):
        raise ValueError(f"valid_frames must lie in [0, {num_frames}], got {valid.min()}..{valid.max()}")
    return valid


def _overlapping_spans(
    rng: np.random.Generator, lengths: np.ndarray, num_spans: np.ndarray, valid: np.ndarray, num_frames: int
) -> np.ndarray:
    """Dense mask of spans with distinct random starts that may overlap, clipped to each row's valid frames."""
    batch_size, max_spans = lengths.shape
    in_row = np.arange(max_spans) < num_spans[:, None]
    shortest = np.where(in_row, lengths, np.iinfo(np.int64).max).min(axis=1)
    # Starts are drawn in [0, valid - shortest); when that leaves too few positions for distinct starts, the range
    # grows to num_spans + 1 (spans starting past the valid frames are then dropped by the clipping below).
    crowded = valid - shortest <= num_spans
    num_starts = np.where(crowded, num_spans + 1, valid - shortest)

    # A uniform random ordered sample of distinct starts per row: the positions of the smallest random keys, with
    # keys past the row's range pushed out. num_starts > num_spans, so the first num_spans picks are all in range.
    keys = rng.random((batch_size, int(num_starts.max())))
    keys[np.arange(keys.shape[1]) >= num_starts[:, None]] = np.inf
    picked = np.argpartition(keys, max_spans - 1, axis=1)[:, :max_spans]
    order = np.argsort(np.take_along_axis(keys, picked, axis=1), axis=1)
    starts = np.take_along_axis(picked, order, axis=1)

    begin = np.minimum(starts, valid[:, None])
    end = np.minimum(starts + np.maximum(lengths, 0), valid[:, None])
    end = np.where(in_row, end, begin)
    # Coverage count through a difference array: +1 at each span start, -1 just past its end.
    row_offset = (np.arange(batch_size) * (num_frames + 1))[:, None]
    size = batch_size * (num_frames + 1)
    delta = np.bincount((row_offset + begin).ravel(), minlength=size) - np.bincount(
        (row_offset + end).ravel(), minlength=size
    )
    coverage = np.cumsum(delta.reshape(batch_size, num_frames + 1), axis=1)[:, :num_frames]
    return coverage > 0


def _separated_spans(
    rng: np.random.Generator, lengths: np.ndarray, min_space: int, valid: int, row: np.ndarray
) -> None:
    """Mark non-overlapping spans in `row` (in place), longest first, by recursive splitting of free intervals.

    Each span goes into a free interval chosen with probability proportional to its length (among intervals that
    can hold the span plus `min_space`); the pieces left on either side stay free if they can still hold the
    shortest span. Spans that no longer fit are skipped.
    """
    shortest = int(lengths.min())
    free = [(0, valid)]
    draws = rng.random(2 * len(lengths)).tolist()
    for k, length in enumerate(sorted(lengths.tolist(), reverse=True)):
        sizes = [e - s if e - s >= length + min_space else 0 for s, e in free]
        total = sum(sizes)
        if total <= 0:
            break
        pick = min(int(draws[2 * k] * total), total - 1)
        choice = 0
        while pick >= sizes[choice]:
            pick -= sizes[choice]
            choice += 1
        s, e = free.pop(choice)
        room = e - length - s  # start in [s, e - length): the span never reaches the interval's last frame
        start = s + min(int(draws[2 * k + 1] * room), room - 1) if room > 0 else s
        row[start : start + length] = True
        if start - s - min_space >= shortest:
            free.append((s, start - min_space + 1))
        if e - start - shortest - min_space > shortest:
            free.append((start + length + min_space, e))


def _equalize_counts(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Randomly unmask frames of rows with more masked frames than the batch minimum, down to that minimum."""
    counts = mask.sum(axis=1)
    target = int(counts.min())
    over = np.flatnonzero(counts > target)
    if over.size == 0:
        return mask
    thinned = np.zeros((over.size, mask.shape[1]), dtype=bool)
    if target > 0:
        # The `target` smallest random keys among the masked frames: a uniform random subset of them.
        keys = rng.random(thinned.shape)
        keys[~mask[over]] = np.inf
        keep = np.argpartition(keys, target - 1, axis=1)[:, :target]
        np.put_along_axis(thinned, keep, values=True, axis=1)
    mask[over] = thinned
    return mask


def compute_span_mask(
    rng: np.random.Generator,
    batch_size: int,
    num_frames: int,
    *,
    mask_prob: float,
    mask_length: int,
    mask_type: str,
    mask_other: float,
    min_masks: int,
    min_space: int,
    no_overlap: bool,
    valid_frames: np.ndarray | None = None,
) -> np.ndarray:
    """Random span mask of shape (batch_size, num_frames), with the same number of masked frames in every row.

    Args:
        rng: the random generator; the same seed gives the same mask.
        batch_size: number of rows.
        num_frames: number of frames per row.
        mask_prob: sets the span count per row, `mask_prob * valid frames / mask_length` on average.
        mask_length: the span length (static), or the scale of the length distribution.
        mask_type: "static", "uniform", "normal" or "poisson".
        mask_other: the shortest length for "uniform", the standard deviation for "normal"; unused otherwise.
        min_masks: the least number of spans per row.
        min_space: the least number of unmasked frames between spans when `no_overlap`.
        no_overlap: place spans without overlap instead of with distinct, possibly overlapping starts.
        valid_frames: (batch_size,) number of valid frames per row (the rest is padding, never masked). When given,
            the number of spans is drawn per row from its valid length; when None, one count serves the batch.

    Returns:
        Boolean mask, True at masked frames.

    """
    _check_span_lengths(mask_type, mask_length, mask_other)
    _check_span_counts(batch_size, num_frames, mask_prob, min_masks, min_space)
    valid = _valid_lengths(valid_frames, batch_size, num_frames)
    mask = np.zeros((batch_size, num_frames), dtype=bool)
    if batch_size == 0:
        return mask

    # Probabilistic rounding of the expected span count: one draw for the batch, or one per row with padding.
    jitter = rng.random(1 if valid_frames is None else batch_size)
    num_spans = np.floor(mask_prob * valid / float(mask_length) + jitter).astype(np.int64)
    num_spans = np.maximum(num_spans, min_masks)
    max_spans = int(num_spans.max())
    if max_spans == 0:
        return mask

    lengths = span_lengths(
        rng, (batch_size, max_spans), mask_length=mask_length, mask_type=mask_type, mask_other=mask_other
    )
    in_row = np.arange(max_spans) < num_spans[:, None]
    lengths[~in_row] = 0
    # A row whose lengths are all zero (possible with "poisson") gets one span of mask_length, shortened to fit.
    empty = (lengths.sum(axis=1) == 0) & (num_spans > 0)
    lengths[empty, 0] = np.minimum(mask_length, valid[empty] - 1)

    if no_overlap:
        for i in range(batch_size):
            if num_spans[i] > 0 and valid[i] > 0:
                _separated_spans(rng, lengths[i, : num_spans[i]], min_space, int(valid[i]), mask[i])
    else:
        mask = _overlapping_spans(rng, lengths, num_spans, valid, num_frames)
    return _equalize_counts(rng, mask)


class MaskGenerator:
    """Time and channel masks for masked prediction, from a `MaskingConfig`.

    Time masks use at least 2 spans per row and draw the span count per row from its valid length (as the reference,
    which always passes a padding mask); channel masks use no minimum and one span count for the batch. The
    config's values are checked when it is loaded (`spidr_jax.config.checks.check_masking`).
    """

    def __init__(self, cfg: MaskingConfig) -> None:
        self.cfg = cfg
        # The reference's settings for both kinds of mask (channel masks have no minimum span count).
        self.time_spans = {
            "mask_prob": cfg.mask_prob, "mask_length": cfg.mask_length, "mask_type": cfg.mask_selection,
            "mask_other": cfg.mask_other, "min_masks": 2, "min_space": cfg.mask_min_space,
        }  # fmt: skip
        self.channel_spans = {
            "mask_prob": cfg.mask_channel_prob, "mask_length": cfg.mask_channel_length,
            "mask_type": cfg.mask_channel_selection, "mask_other": cfg.mask_channel_other, "min_masks": 0,
            "min_space": cfg.mask_channel_min_space,
        }  # fmt: skip

    def __call__(
        self,
        rng: np.random.Generator,
        batch_size: int,
        num_frames: int,
        *,
        channels: int | None = None,
        valid_frames: np.ndarray | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The (batch, frames) time mask and the (batch, channels) channel mask; None where its probability is 0.

        `valid_frames` is the number of valid frames per row (all frames when None). The channel mask applies to
        every frame of a row.
        """
        time_mask = None
        if self.cfg.mask_prob > 0:
            if valid_frames is None:
                valid_frames = np.full(batch_size, num_frames, dtype=np.int64)
            time_mask = compute_span_mask(
                rng, batch_size, num_frames, no_overlap=self.cfg.no_mask_overlap, valid_frames=valid_frames,
                **self.time_spans,
            )  # fmt: skip
        channel_mask = None
        if self.cfg.mask_channel_prob > 0:
            if channels is None:
                raise ValueError("channel masking is enabled (mask_channel_prob > 0): pass `channels`")
            channel_mask = compute_span_mask(
                rng, batch_size, channels, no_overlap=self.cfg.no_mask_channel_overlap, **self.channel_spans
            )
        return time_mask, channel_mask
