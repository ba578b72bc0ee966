"""Validating a manifest's audio before training, so bad files fail fast with a readable list instead of mid-epoch.

Only headers are read (no decoding) unless asked to decode every file (`data.verify_audio`), from a thread pool:
libsndfile releases the GIL while it reads, so scanning is I/O-bound and parallelizes well on network file systems.

With ``resample=True`` (`data.resample`) audio at any rate and channel count is usable: the manifest's
``num_samples`` (at the file's own rate) is checked against the header, and the rows come back with their length
at 16 kHz (`spidr_jax.data.audio.resampled_length`), which is what batching and the model see.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, TypeVar

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, AudioInfo, audio_info, read_audio, resampled_length
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.progress import track

T = TypeVar("T")
R = TypeVar("R")

# Problem kinds, the keys of ScanResult.counts.
UNREADABLE = "unreadable"
SAMPLE_RATE_MISMATCH = "sample rate"
NOT_MONO = "not mono"
EMPTY = "empty"
LENGTH_MISMATCH = "length mismatch"
UNDECODABLE = "undecodable"


class MinimumLength(NamedTuple):
    """The fewest samples a row must have to be kept, and why (a config field, or the model's own floor)."""

    samples: int
    reason: str

    def describe(self) -> str:
        """E.g. `640 samples (one frame of the model at a multiple of its stride (320 samples))`."""
        return f"{self.samples} samples ({self.reason})"


@dataclass(frozen=True)
class ScanResult:
    """The outcome of scanning a manifest.

    ``rows`` are the usable rows in manifest order: long enough and, when audio was checked, without problems.
    ``problems`` lists ``(location, reason)`` for every row that failed a check, ``counts`` the number of
    problems per kind, and ``num_too_short`` the rows dropped for being shorter than ``min_sample_size``
    (not a problem: batching drops them too).
    """

    rows: list[ManifestRow]
    problems: list[tuple[str, str]]
    counts: dict[str, int] = field(default_factory=dict)
    num_too_short: int = 0
    num_scanned: int = 0

    @property
    def ok(self) -> bool:
        """Whether no row had a problem."""
        return not self.problems


def bounded_map(
    function: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor, *, window: int
) -> Iterator[R]:
    """``function`` over ``items`` in the pool, results in input order, with at most ``window`` tasks in flight.

    Unlike ``pool.map``, this does not submit every item up front, which matters for millions of files.
    """
    pending: collections.deque[Future[R]] = collections.deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


Problem = tuple[str, str]  # (kind, reason)


def decode_row(row: ManifestRow, *, resample: bool = False) -> Problem | None:
    """As `check_row`, then decode the whole file: corrupt data behind a valid header is a problem too."""
    return _inspect(row, resample=resample, decode=True)[0]


def check_row(row: ManifestRow, *, resample: bool = False) -> Problem | None:
    """``(kind, reason)`` of the first problem with a row's audio header, or None when it is usable.

    Without ``resample`` only 16 kHz mono audio is usable.
    """
    return _inspect(row, resample=resample, decode=False)[0]


def _inspect(row: ManifestRow, *, resample: bool, decode: bool) -> tuple[Problem | None, ManifestRow]:
    """The first problem with a row (or None), and the row with its length at 16 kHz."""
    try:
        info = audio_info(row)
    except AudioError as error:
        return (UNREADABLE, error.reason), row
    problem = _header_problem(row, info, resample=resample)
    if problem is not None:
        return problem, row
    length = resampled_length(info.num_samples, info.sample_rate)
    if length == 0:
        return (EMPTY, f"no samples once resampled to {SAMPLE_RATE} Hz"), row
    if decode:
        try:
            waveform = read_audio(row, resample=resample)
        except AudioError as error:
            return (UNDECODABLE, error.reason), row
        if len(waveform) != length:
            expected = f"{length} at {SAMPLE_RATE} Hz" if length != row.num_samples else str(length)
            return (UNDECODABLE, f"decoded {len(waveform)} samples, the header says {expected}"), row
    return None, row if length == row.num_samples else dataclasses.replace(row, num_samples=length)


def _header_problem(row: ManifestRow, info: AudioInfo, *, resample: bool) -> Problem | None:
    """The first problem of a header: not 16 kHz mono (unless resampling), no samples, or not the manifest's length."""
    if not resample and info.sample_rate != SAMPLE_RATE:
        return SAMPLE_RATE_MISMATCH, f"sample rate is {info.sample_rate} Hz, expected {SAMPLE_RATE} Hz"
    if not resample and info.channels != 1:
        return NOT_MONO, f"{info.channels} channels, expected mono"
    if info.num_samples == 0:
        return EMPTY, "no samples"
    if info.num_samples != row.num_samples:
        return LENGTH_MISMATCH, f"header has {info.num_samples} samples, manifest says {row.num_samples}"
    return None


def scan_manifest(
    rows: list[ManifestRow],
    *,
    min_sample_size: int = 0,
    check_audio: bool = True,
    decode: bool = False,
    resample: bool = False,
    num_threads: int = 8,
    progress: bool = True,
) -> ScanResult:
    """Drop rows shorter than ``min_sample_size`` and check the headers of the others.

    With ``check_audio=False`` only the length filter runs (no file is opened); with ``decode=True`` every file
    is also decoded whole (slower: reads all the audio once). With ``resample=True`` audio at any rate and channel
    count is usable, the returned rows carry their 16 kHz lengths, and ``min_sample_size`` applies to those (so
    every header is read, short rows included).
    """
    if resample and not check_audio:
        raise ValueError("resampling needs the headers: check_audio must be True")
    # The lengths at 16 kHz are known once the headers are read: filter after the scan when resampling.
    kept = rows if resample else [row for row in rows if row.num_samples >= min_sample_size]
    num_too_short = len(rows) - len(kept)
    if not check_audio:
        return ScanResult(rows=kept, problems=[], num_too_short=num_too_short, num_scanned=0)
    usable: list[ManifestRow] = []
    problems: list[tuple[str, str]] = []
    counts: collections.Counter[str] = collections.Counter()
    inspect = partial(_inspect, resample=resample, decode=decode)
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        results = bounded_map(inspect, kept, pool, window=max(1, num_threads) * 16)
        description = "Decoding audio" if decode else "Checking audio"
        checked = track(zip(kept, results, strict=True), total=len(kept), description=description, disable=not progress)
        for row, (problem, row_at_16k) in checked:
            if problem is None:
                usable.append(row_at_16k)
                continue
            kind, reason = problem
            problems.append((row.location, reason))
            counts[kind] += 1
    if resample:
        num_too_short = sum(row.num_samples < min_sample_size for row in usable)
        usable = [row for row in usable if row.num_samples >= min_sample_size]
    return ScanResult(
        rows=usable, problems=problems, counts=dict(counts), num_too_short=num_too_short, num_scanned=len(kept)
    )


def at_model_rate(
    rows: list[ManifestRow], *, num_threads: int = 8, progress: bool = False
) -> tuple[list[ManifestRow], int]:
    """The rows with their length at 16 kHz mono, from their headers; and how many were not 16 kHz mono.

    The length is what `read_audio(..., resample=True)` gives. A row whose header cannot be read is kept as it is
    (it fails when it is decoded).
    """

    def model_rate(row: ManifestRow) -> ManifestRow:
        try:
            info = audio_info(row)
        except AudioError:
            return row
        if info.sample_rate == SAMPLE_RATE and info.channels == 1:
            return row
        return dataclasses.replace(row, num_samples=resampled_length(info.num_samples, info.sample_rate))

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        converted = list(track(bounded_map(model_rate, rows, pool, window=max(1, num_threads) * 16),
                               total=len(rows), description="reading headers", disable=not progress))  # fmt: skip
    return converted, sum(new is not old for new, old in zip(converted, rows, strict=True))


def left_out_line(result: ScanResult, minimum: MinimumLength, limit: int = 3) -> str | None:
    """One line on the rows a scan left out (the first few unusable files, with their reasons), or None."""
    parts = []
    if result.problems:
        shown = "; ".join(f"{location}: {reason}" for location, reason in result.problems[:limit])
        more = f"; and {len(result.problems) - limit} more" if len(result.problems) > limit else ""
        parts.append(f"{len(result.problems)} of {result.num_scanned} files unusable ({shown}{more})")
    if result.num_too_short:
        parts.append(f"{result.num_too_short} shorter than {minimum.describe()}")
    return f"left out: {', '.join(parts)}" if parts else None


def format_problems(result: ScanResult, limit: int = 20) -> str:
    """A readable summary: the first ``limit`` bad files with their reasons, then a count per kind."""
    lines = []
    if result.problems:
        lines.append(f"{len(result.problems)} of {result.num_scanned} files have problems:")
        lines.extend(f"  {location}: {reason}" for location, reason in result.problems[:limit])
        if len(result.problems) > limit:
            lines.append(f"  ... and {len(result.problems) - limit} more")
        lines.append("By kind: " + ", ".join(f"{kind}: {count}" for kind, count in sorted(result.counts.items())))
    else:
        lines.append(f"No problems in {result.num_scanned} files.")
    if result.num_too_short:
        lines.append(f"{result.num_too_short} rows shorter than the minimum sample size were left out.")
    return "\n".join(lines)
