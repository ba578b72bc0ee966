"""Quality of discrete units against frame-level phone alignments.

Each utterance contributes a sequence of phone labels, one per ``alignment_step`` ms (10 ms), and a sequence of
unit ids, one per ``frame_step`` ms (20 ms). Every unit is repeated ``frame_step // alignment_step`` times so that
both sequences share the phone time grid; they may then differ by at most ``max_length_diff`` frames (the model
drops a partial frame at the end of the audio), and the longer one is truncated. The joint phone/unit counts give:

- **phone purity**: how well the most likely phone of each unit predicts the phone (sum over units of max_p P(p, u)),
- **cluster purity**: how well the most likely unit of each phone predicts the unit (sum over phones of
  max_u P(p, u)),
- **PNMI**: mutual information between phones and units, normalised by the phone entropy,
- **codebook perplexity** and **active codewords**: how evenly and how many of the units are used,
- **bitrate**: bits per second of the deduplicated unit sequences.

Phones are ordered by decreasing frequency, ties broken by order of first appearance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from spidr_jax.errors import InputError

__all__ = [
    "PhonesAndUnits",
    "UnitsQuality",
    "bitrate",
    "count_matrix",
    "phone_unit_probabilities",
    "units_quality",
]

PhonesAndUnits = tuple[Sequence[str], Sequence[int]]


class UnitsQuality(NamedTuple):
    """Unit-quality metrics of one codebook on one aligned corpus."""

    phone_purity: float
    cluster_purity: float
    pnmi: float
    codebook_perplexity: float
    active_codewords: int
    bitrate: float


def _repeat_factor(frame_step: int, alignment_step: int) -> int:
    """How many alignment frames one unit spans; must be a positive integer."""
    if frame_step <= 0 or alignment_step <= 0 or frame_step % alignment_step != 0:
        raise InputError(
            f"frame_step ({frame_step} ms) must be a positive multiple of alignment_step ({alignment_step} ms)"
        )
    return frame_step // alignment_step


def count_matrix(
    data: Mapping[str, PhonesAndUnits],
    *,
    num_units: int,
    repeat: int,
    max_length_diff: int = 2,
    num_phones: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Joint counts of phones and units, with rows sorted by decreasing phone frequency.

    :param data: Mapping from file id to (phone per alignment frame, unit per model frame).
    :param num_units: Codebook size; every unit must lie in [0, num_units).
    :param repeat: Alignment frames per unit (``frame_step // alignment_step``).
    :param max_length_diff: Largest tolerated length difference, in alignment frames, after repetition.
    :param num_phones: Optional upper bound on the number of distinct phones (an error is raised beyond it).
    :returns: The (phones, units) int64 count matrix and the phone label of each row.
    """
    if repeat < 1:
        raise InputError(f"repeat must be >= 1, got {repeat}")
    phone_to_index: dict[str, int] = {}
    flat_chunks: list[np.ndarray] = []
    for fileid, (phones, units) in data.items():
        units_arr = np.repeat(np.asarray(units, dtype=np.int64).reshape(-1), repeat)
        if abs(len(phones) - len(units_arr)) > max_length_diff:
            raise InputError(
                f"{fileid}: {len(phones)} phone frames vs {len(units_arr)} unit frames after repeating each unit "
                f"{repeat} times, more than the {max_length_diff} frames of difference allowed"
            )
        length = min(len(phones), len(units_arr))
        if length == 0:
            continue
        units_arr = units_arr[:length]
        if units_arr.min() < 0 or units_arr.max() >= num_units:
            bad = int(units_arr[(units_arr < 0) | (units_arr >= num_units)][0])
            raise IndexError(f"{fileid}: unit {bad} is out of bounds for num_units={num_units}")
        # Map labels to row indices in order of first appearance, without a Python loop over frames.
        labels, first, inverse = np.unique(
            np.asarray(phones[:length], dtype=str), return_index=True, return_inverse=True
        )
        local_to_global = np.empty(len(labels), dtype=np.int64)
        for local in np.argsort(first, kind="stable"):
            local_to_global[local] = phone_to_index.setdefault(str(labels[local]), len(phone_to_index))
        flat_chunks.append(local_to_global[inverse.reshape(-1)] * num_units + units_arr)

    n_phones = len(phone_to_index)
    if num_phones is not None and n_phones > num_phones:
        raise IndexError(f"{n_phones} distinct phones found, more than num_phones={num_phones}")
    flat = np.concatenate(flat_chunks) if flat_chunks else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=n_phones * num_units).reshape(n_phones, num_units)
    # Stable sort on negated totals: most frequent first, ties keep their order of first appearance.
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    index_to_phone = list(phone_to_index)
    return counts[order], [index_to_phone[i] for i in order]


def bitrate(*, num_units: int, sequences: Iterable[Sequence[int]] | None = None, frame_step: int = 20) -> float:
    """Bitrate in bits per second.

    :param num_units: Codebook size.
    :param sequences: Unit sequences. Consecutive repeats are merged before counting units.
        If None, one unit every ``frame_step`` ms is assumed.
    :param frame_step: Duration of one unit frame, in milliseconds.
    """
    if sequences is None:
        return math.log2(num_units) * 1000 / frame_step
    num_frames, num_segments = 0, 0
    for units in sequences:
        units_list = list(units)
        num_frames += len(units_list)
        num_segments += sum(1 for _ in itertools.groupby(units_list))
    if num_frames == 0:
        raise InputError("Cannot compute a bitrate from empty unit sequences")
    return math.log2(num_units) * num_segments / (num_frames * frame_step / 1000)


def units_quality(
    data: Mapping[str, PhonesAndUnits],
    *,
    num_units: int,
    num_phones: int | None = None,
    frame_step: int = 20,
    alignment_step: int = 10,
    max_length_diff: int = 2,
    eps: float = 1e-10,
) -> UnitsQuality:
    """Phone purity, cluster purity, PNMI, codebook perplexity, active codewords and bitrate.

    :param data: Mapping from file id to (phone per alignment frame, unit per model frame).
    :param num_units: Codebook size.
    :param num_phones: Optional upper bound on the number of distinct phones; inferred from ``data``.
    :param frame_step: Duration of one unit frame, in milliseconds.
    :param alignment_step: Duration of one phone frame, in milliseconds.
    :param max_length_diff: Largest tolerated length difference, in alignment frames, after repetition.
    :param eps: Smoothing added inside the logarithms so that empty cells contribute zero.
    """
    repeat = _repeat_factor(frame_step, alignment_step)
    counts, _ = count_matrix(
        data, num_units=num_units, repeat=repeat, max_length_diff=max_length_diff, num_phones=num_phones
    )
    total = counts.sum()
    if total == 0:
        raise InputError("No aligned frames to evaluate")
    proba = counts / total
    p_phone = proba.sum(axis=1, keepdims=True)
    p_unit = proba.sum(axis=0, keepdims=True)
    mutual_info = np.sum(proba * np.log(proba / (p_phone * p_unit + eps) + eps))
    phone_entropy = np.sum(-p_phone * np.log(p_phone + eps))
    unit_marginal = p_unit.reshape(-1)
    perplexity = np.exp2(-np.sum(unit_marginal * np.log2(unit_marginal + eps)))
    return UnitsQuality(
        phone_purity=float(proba.max(axis=0).sum()),
        cluster_purity=float(proba.max(axis=1).sum()),
        pnmi=float(mutual_info / phone_entropy),
        codebook_perplexity=float(perplexity),
        active_codewords=int(np.count_nonzero(counts.sum(axis=0))),
        bitrate=bitrate(num_units=num_units, sequences=(units for _, units in data.values()), frame_step=frame_step),
    )


def phone_unit_probabilities(
    data: Mapping[str, PhonesAndUnits],
    *,
    num_units: int,
    only_active: bool,
    num_phones: int | None = None,
    frame_step: int = 20,
    alignment_step: int = 10,
    max_length_diff: int = 2,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """P(phone | unit), with units grouped by their most probable phone, for the phone-vs-unit figure.

    Units are sorted by their most probable phone (phones in decreasing frequency), then by decreasing probability
    of that phone; ties keep increasing unit id. Unused units have an all-zero column and go with the first phone,
    unless ``only_active`` drops them.

    :returns: The (phones, selected units) probability matrix, the phone of each row, and the unit id of each column.
    """
    repeat = _repeat_factor(frame_step, alignment_step)
    counts, phone_order = count_matrix(
        data, num_units=num_units, repeat=repeat, max_length_diff=max_length_diff, num_phones=num_phones
    )
    per_unit = counts.sum(axis=0, keepdims=True)
    proba = np.divide(counts, per_unit, out=np.zeros(counts.shape, dtype=np.float64), where=per_unit != 0)
    best_phone = proba.argmax(axis=0) if len(counts) else np.zeros(num_units, dtype=np.int64)
    unit_order: list[np.ndarray] = []
    for phone_index in range(len(counts)):
        units = np.flatnonzero(best_phone == phone_index)
        unit_order.append(units[np.argsort(-proba[phone_index, units], kind="stable")])
    order = np.concatenate(unit_order) if unit_order else np.zeros(0, dtype=np.int64)
    if only_active:
        order = order[per_unit[0, order] > 0]
    return proba[:, order], phone_order, order.astype(np.int64)
