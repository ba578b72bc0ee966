"""ZeroSpeech ``.item`` files read into phone tokens: which frames of which file, and their phone, context, speaker.

An item file is a header line naming the columns, ``#file onset offset #phone prev-phone next-phone speaker``, then
one token per line, separated by spaces, with times in seconds. A token covers the frames whose centre lies in
``[onset, offset]``: with a step of ``s`` seconds, frame ``i`` is centred at ``(i + 1/2) s`` (the convention of
ABXpy and fastabx), so its frames are ``ceil(onset / s - 1/2)`` to ``floor(offset / s - 1/2)``, both included. The
Libri-Light / ZeroSpeech 2021 code slices one frame less at the end (``librilight_slicing=True`` reproduces it).
Times are read as decimals and converted with exact decimal arithmetic, so that a boundary that falls on a frame's
centre is never moved by a float's rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from spidr_jax.errors import UsageError, UserError

__all__ = ["ItemFileError", "ItemTokens", "check_features", "frames_per_second", "read_item_file", "token_frames"]

HEADER = ("#file", "onset", "offset", "#phone", "prev-phone", "next-phone", "speaker")
_SHOWN = 3  # how many offending lines or files an error message names


class ItemFileError(UserError):
    """An item file that cannot be read, or that does not fit the features it is scored on."""


@dataclass(frozen=True)
class ItemTokens:
    """The tokens of an item file, one entry per token in file order, and the names behind the integer codes.

    ``start``/``stop`` are frame indices (``stop`` excluded); ``context`` codes the (previous, next) phone pair;
    ``line`` is the token's line number in the item file, for error messages.
    """

    path: Path
    fileids: list[str]
    phones: list[str]
    contexts: list[tuple[str, str]]
    speakers: list[str]
    file: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    phone: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.file)

    @property
    def lengths(self) -> np.ndarray:
        """Frames per token."""
        return self.stop - self.start

    def describe(self, token: int) -> str:
        """``line N (fileid, frames a..b)``: where a token comes from, for messages."""
        fileid = self.fileids[self.file[token]]
        return f"line {self.line[token]} ({fileid}, frames {self.start[token]}..{self.stop[token] - 1})"


def frames_per_second(frame_step: float | str | Decimal) -> Decimal:
    """Frames per second as an exact Decimal (``0.02`` -> 50)."""
    try:
        step = Decimal(str(frame_step))
    except InvalidOperation:
        raise UsageError(f"frame step must be a number of seconds, got {frame_step!r}") from None
    if not step.is_finite() or step <= 0:
        raise UsageError(f"frame step must be a positive number of seconds, got {frame_step!r}")
    return Decimal(1) / step


def token_frames(
    onset: Decimal, offset: Decimal, frequency: Decimal, *, librilight_slicing: bool = False
) -> tuple[int, int]:
    """``(start, stop)`` frame indices of the frames centred in ``[onset, offset]`` (``stop`` excluded)."""
    half = Decimal("0.5")
    start = int((onset * frequency - half).to_integral_value(rounding=ROUND_CEILING))
    last = int((offset * frequency - half).to_integral_value(rounding=ROUND_FLOOR))
    return start, last if librilight_slicing else last + 1


def _header(path: Path, first_line: str, *, context: bool) -> dict[str, int]:
    """Column positions by name, checking that the columns this evaluation needs are there."""
    names = first_line.split()
    needed = HEADER if context else tuple(name for name in HEADER if not name.endswith("-phone"))
    missing = [name for name in needed if name not in names]
    if not names or names[0] != "#file" or missing:
        raise ItemFileError(
            f"{path}: the first line must be the header '{' '.join(HEADER)}'"
            + (f" (missing {', '.join(missing)})" if missing and names and names[0] == "#file" else "")
            + f", got {first_line.strip()[:80]!r}"
        )
    if len(set(names)) != len(names):
        raise ItemFileError(f"{path}: the header names a column twice: {first_line.strip()[:80]!r}")
    return {name: names.index(name) for name in needed}


def _decimal(path: Path, number: int, name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ItemFileError(f"{path} line {number}: {name} {text!r} is not a number of seconds") from None
    if not value.is_finite() or value < 0:
        raise ItemFileError(f"{path} line {number}: {name} {text!r} is not a number of seconds")
    return value


def read_item_file(
    path: str | Path,
    *,
    frame_step: float | str | Decimal = "0.02",
    context: bool = True,
    librilight_slicing: bool = False,
) -> ItemTokens:
    """Read a ZeroSpeech item file into tokens with frame ranges at one frame every ``frame_step`` seconds.

    :param path: The ``.item`` file.
    :param frame_step: Seconds between frames (0.02 for 50 Hz features); given as a string or Decimal it is exact.
    :param context: Whether the ``prev-phone`` and ``next-phone`` columns are needed (ABX within context).
    :param librilight_slicing: Drop the last frame of every token, as Libri-Light / ZeroSpeech 2021 did.
    :raises ItemFileError: On a missing, empty or garbled file, or a token shorter than one frame; the message
        names the file and the first offending lines.
    """
    path = Path(path)
    if not path.is_file():
        raise ItemFileError(f"item file not found: {path}")
    frequency = frames_per_second(frame_step)
    columns, rows = None, []
    codes: dict[str, dict] = {"fileid": {}, "phone": {}, "context": {}, "speaker": {}}
    with path.open(encoding="utf-8") as stream:
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            if columns is None:
                columns = _header(path, text, context=context)
                width = max(columns.values()) + 1
                continue
            fields = text.split()
            if len(fields) < width:
                raise ItemFileError(
                    f"{path} line {number}: expected {width} fields ({' '.join(HEADER[:width])}), got {len(fields)}"
                )
            onset = _decimal(path, number, "onset", fields[columns["onset"]])
            offset = _decimal(path, number, "offset", fields[columns["offset"]])
            if offset <= onset:
                raise ItemFileError(f"{path} line {number}: offset {offset} is not after onset {onset}")
            start, stop = token_frames(onset, offset, frequency, librilight_slicing=librilight_slicing)
            neighbours = (fields[columns["prev-phone"]], fields[columns["next-phone"]]) if context else ("", "")
            keys = {
                "fileid": fields[columns["#file"]],
                "phone": fields[columns["#phone"]],
                "context": neighbours,
                "speaker": fields[columns["speaker"]],
            }
            row = [codes[name].setdefault(key, len(codes[name])) for name, key in keys.items()]
            rows.append((*row, start, stop, number))
    if columns is None:
        raise ItemFileError(f"{path} is empty: expected the header '{' '.join(HEADER)}' and one line per token")
    if not rows:
        raise ItemFileError(f"{path} has a header but no tokens")
    table = np.asarray(rows, dtype=np.int64)
    tokens = ItemTokens(
        path=path,
        fileids=list(codes["fileid"]),
        phones=list(codes["phone"]),
        contexts=list(codes["context"]),
        speakers=list(codes["speaker"]),
        file=table[:, 0].astype(np.int32),
        phone=table[:, 1].astype(np.int32),
        context=table[:, 2].astype(np.int32),
        speaker=table[:, 3].astype(np.int32),
        start=table[:, 4],
        stop=table[:, 5],
        line=table[:, 6],
    )
    _check_not_empty(tokens, frame_step)
    return tokens


def _check_not_empty(tokens: ItemTokens, frame_step: float | str | Decimal) -> None:
    """Raise on tokens that hold no frame (shorter than a frame, or between two frame centres)."""
    empty = np.flatnonzero(tokens.stop <= tokens.start)
    if len(empty):
        shown = ", ".join(f"line {tokens.line[i]}" for i in empty[:_SHOWN])
        raise ItemFileError(
            f"{tokens.path}: {len(empty)} tokens hold no frame at one frame every {frame_step} s (shorter than a "
            f"frame): {shown}{', ...' if len(empty) > _SHOWN else ''}; remove them from the item file"
        )


def check_features(tokens: ItemTokens, frames: Mapping[str, int], source: str) -> None:
    """Check that every file of the item file has features, long enough for its tokens.

    :param frames: Number of frames of each available file, by fileid.
    :param source: What the features come from (a folder, a manifest), for the message.
    :raises ItemFileError: Naming a few missing fileids, or the first token past the end of its file.
    """
    missing = [fileid for fileid in tokens.fileids if fileid not in frames]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
        raise ItemFileError(
            f"{tokens.path}: {len(missing)} of its {len(tokens.fileids)} files are not in {source}: {shown}"
        )
    available = np.asarray([frames[fileid] for fileid in tokens.fileids], dtype=np.int64)[tokens.file]
    beyond = np.flatnonzero(tokens.stop > available)
    if len(beyond):
        first = beyond[0]
        raise ItemFileError(
            f"{tokens.path} {tokens.describe(first)}: the token ends after the last of the file's "
            f"{available[first]} frames ({len(beyond)} such tokens); the features are shorter than the item file "
            f"expects (wrong frame step, or features cut short)"
        )
    if np.any(tokens.start < 0):
        first = np.flatnonzero(tokens.start < 0)[0]
        raise ItemFileError(f"{tokens.path} {tokens.describe(first)}: the token starts before the file")
