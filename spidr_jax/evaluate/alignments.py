"""Frame-level phone alignments, and pairing them with extracted units.

File format: UTF-8 text, one utterance per line::

    # comment lines start with '#', blank lines are ignored
    fileid phone phone phone ...

Labels are separated by whitespace, one phone label per 10 ms frame (for instance ``SIL SIL AH AH AH T T``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.errors import InputError, UserError

__all__ = [
    "AlignmentFormatError",
    "AlignmentMismatchError",
    "check_alignment_lengths",
    "pair_units_with_alignments",
    "read_alignments",
    "write_alignments",
]

# How many file ids to quote when reporting a mismatch between alignments and units.
_MAX_LISTED = 5


class AlignmentFormatError(UserError, ValueError):
    """A line of an alignment file cannot be parsed."""


def read_alignments(path: str | Path) -> dict[str, list[str]]:
    """Read a phone alignment file into a mapping from file id to the phone label of each 10 ms frame.

    :raises FileNotFoundError: If ``path`` does not exist.
    :raises AlignmentFormatError: On a line without phones, a repeated file id, or an empty file;
        the message names the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Alignment file not found: {path}")
    alignments: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fileid, *phones = stripped.split()
            if not phones:
                raise AlignmentFormatError(f"{path}:{line_number}: file id '{fileid}' has no phone labels")
            if fileid in alignments:
                raise AlignmentFormatError(
                    f"{path}:{line_number}: file id '{fileid}' already aligned on line {first_line[fileid]}"
                )
            alignments[fileid] = phones
            first_line[fileid] = line_number
    if not alignments:
        raise AlignmentFormatError(f"{path}: no alignments found")
    return alignments


def write_alignments(alignments: Mapping[str, Sequence[str]], path: str | Path) -> None:
    """Write alignments in the format read by :func:`read_alignments`."""
    lines = []
    for fileid, phones in alignments.items():
        if not fileid or any(c.isspace() for c in fileid) or fileid.startswith("#"):
            raise InputError(f"Invalid file id {fileid!r}: it must be non-empty, without spaces, not start with '#'")
        if not phones or any(not p or any(c.isspace() for c in p) for p in phones):
            raise InputError(f"Invalid phones for {fileid!r}: at least one label, without spaces")
        lines.append(" ".join([fileid, *phones]))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


class AlignmentMismatchError(UserError, ValueError):
    """A file's alignment does not cover its audio (wrong file, wrong frame rate); exit code 2, like a bad config."""

    exit_code = 2


def check_alignment_lengths(
    rows: Sequence[ManifestRow],
    alignments: Mapping[str, Sequence[str]],
    frames_of: Callable[[int], int],
    *,
    where: str,
    repeat: int = 2,
    max_length_diff: int = 2,
) -> None:
    """Raise AlignmentMismatchError naming the first file whose alignment and model frames disagree.

    A file of `n` samples has `frames_of(n)` model frames, each `repeat` alignment frames long; the alignment may
    differ from that by `max_length_diff` frames (what the unit metrics tolerate). Files without alignment pass.
    """
    for row in rows:
        phones = alignments.get(row.fileid)
        if phones is None:
            continue
        frames = int(frames_of(row.num_samples))
        if abs(len(phones) - repeat * frames) > max_length_diff:
            raise AlignmentMismatchError(
                f"{where}: {row.location}: {len(phones)} alignment frames for {frames} model frames "
                f"({row.num_samples} samples; {repeat * frames} alignment frames expected, within {max_length_diff})"
            )


def _listed(ids: set[str]) -> str:
    """A few sorted ids, to quote in a message."""
    shown = sorted(ids)[:_MAX_LISTED]
    more = f", ... ({len(ids) - len(shown)} more)" if len(ids) > len(shown) else ""
    return ", ".join(shown) + more


def pair_units_with_alignments(
    alignments: Mapping[str, Sequence[str]],
    units: Mapping[str, Sequence[int] | np.ndarray],
) -> dict[str, tuple[list[str], list[int]]]:
    """Pair each aligned file with its unit sequence, in the order of ``alignments``.

    Files present on only one side are left out with a warning that counts them.

    :param alignments: Mapping from file id to phone labels (see :func:`read_alignments`).
    :param units: Mapping from file id to unit ids, one per model frame.
    :raises ValueError: If no file id is shared, or a unit sequence is not one-dimensional.
    :returns: Mapping from file id to (phones, units), the input of the metrics in ``units_quality``.
    """
    common = [fileid for fileid in alignments if fileid in units]
    if not common:
        raise InputError(
            f"No file id in common between the {len(alignments)} alignments ({_listed(set(alignments))}) "
            f"and the {len(units)} unit sequences ({_listed(set(units))})"
        )
    only_alignments = set(alignments) - set(units)
    only_units = set(units) - set(alignments)
    if only_alignments or only_units:
        warnings.warn(
            f"{len(common)} files paired; {len(only_alignments)} aligned files have no units"
            + (f" ({_listed(only_alignments)})" if only_alignments else "")
            + f", {len(only_units)} unit sequences have no alignment"
            + (f" ({_listed(only_units)})" if only_units else ""),
            stacklevel=2,
        )
    paired: dict[str, tuple[list[str], list[int]]] = {}
    for fileid in common:
        unit_array = np.asarray(units[fileid])
        if unit_array.ndim != 1:
            raise InputError(f"{fileid}: expected a 1-D unit sequence, got shape {unit_array.shape}")
        paired[fileid] = (list(alignments[fileid]), [int(u) for u in unit_array.tolist()])
    return paired
