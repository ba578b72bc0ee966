"""Validating a manifest's audio before training, so bad files fail fast with a readable list instead of mid-epoch.

Only headers are read (no decoding) unless asked to decode every file (`data.verify_audio`), from a thread pool:
libsndfile releases the GIL while it reads, so scanning is I/O-bound and parallelizes well on network file systems.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, audio_info, read_audio
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


def decode_row(row: ManifestRow) -> tuple[str, str] | None:
    """As `check_row`, then decode the whole file: corrupt data behind a valid header is a problem too."""
    problem = check_row(row)
    if problem is not None:
        return problem
    try:
        waveform = read_audio(row)
    except AudioError as error:
        return UNDECODABLE, error.reason
    if len(waveform) != row.num_samples:
        return UNDECODABLE, f"decoded {len(waveform)} samples, the header says {row.num_samples}"
    return None


def check_row(row: ManifestRow) -> tuple[str, str] | None:
    """``(kind, reason)`` of the first problem with a row's audio header, or None when it is usable."""
    try:
        info = audio_info(row)
    except AudioError as error:
        return UNREADABLE, error.reason
    if info.sample_rate != SAMPLE_RATE:
        return SAMPLE_RATE_MISMATCH, f"sample rate is {info.sample_rate} Hz, expected {SAMPLE_RATE} Hz"
    if info.channels != 1:
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
    num_threads: int = 8,
    progress: bool = True,
) -> ScanResult:
    """Drop rows shorter than ``min_sample_size`` and check the headers of the others.

    With ``check_audio=False`` only the length filter runs (no file is opened); with ``decode=True`` every file
    is also decoded whole (slower: reads all the audio once).
    """
    kept = [row for row in rows if row.num_samples >= min_sample_size]
    num_too_short = len(rows) - len(kept)
    if not check_audio:
        return ScanResult(rows=kept, problems=[], num_too_short=num_too_short, num_scanned=0)
    usable: list[ManifestRow] = []
    problems: list[tuple[str, str]] = []
    counts: collections.Counter[str] = collections.Counter()
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        results = bounded_map(decode_row if decode else check_row, kept, pool, window=max(1, num_threads) * 16)
        description = "Decoding audio" if decode else "Checking audio"
        checked = track(zip(kept, results, strict=True), total=len(kept), description=description, disable=not progress)
        for row, problem in checked:
            if problem is None:
                usable.append(row)
                continue
            kind, reason = problem
            problems.append((row.location, reason))
            counts[kind] += 1
    return ScanResult(
        rows=usable, problems=problems, counts=dict(counts), num_too_short=num_too_short, num_scanned=len(kept)
    )


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
