"""Bad audio in a training run: the files the scan left out, and the rows that failed to decode mid-run.

Both go to `<workdir>/bad_audio.txt`, one JSON object per line with the file's location and the reason (rows
that failed in training also carry the step). A failed row never stops the run: the pipeline replaced it by
another row of its bucket. Too many of them mean broken storage rather than a few corrupt files, so the run
stops, with one line, once more than `data.max_bad_fraction` of the rows it loaded failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from spidr_jax.data.scan import MinimumLength, ScanResult, format_problems
from spidr_jax.errors import UserError

BAD_AUDIO_FILE = "bad_audio.txt"
MIN_FAILURES = 10


class TooMuchBadAudioError(UserError, RuntimeError):
    """More than `data.max_bad_fraction` of the loaded rows failed to decode."""


def report_scan_problems(
    scan: ScanResult, minimum: MinimumLength, workdir: Path, say: Callable[[str], None], *, write: bool
) -> None:
    """Print the scan's problems and list every excluded file in `<workdir>/bad_audio.txt`.

    Rows recorded by an earlier run of the same workdir as failing in training are kept.
    """
    if scan.num_too_short:
        say(f"{scan.num_too_short} files shorter than {minimum.describe()} are left out")
    if scan.problems:
        say(f"{len(scan.problems)} audio files are unusable and left out (list in {workdir / BAD_AUDIO_FILE}):")
        say(format_problems(scan))
    if not write:
        return
    path = workdir / BAD_AUDIO_FILE
    earlier = [line for line in _read_lines(path) if '"step"' in line]
    lines = [json.dumps({"path": location, "problem": reason}) for location, reason in scan.problems] + earlier
    if lines or path.exists():
        tmp = path.with_suffix(".txt.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(path)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


class DecodeFailures:
    """Counts and records the rows that failed to decode during training (each process its own rows)."""

    def __init__(self, workdir: Path, max_fraction: float, say: Callable[[str], None]) -> None:
        self.path = workdir / BAD_AUDIO_FILE
        self.max_fraction = max_fraction
        self.say = say
        self.failed = 0
        self.loaded = 0
        self.logged: set[str] = set()

    def add(self, step: int, rows: int, failures: list[tuple[str, str]] | None) -> None:
        """Count a batch of `rows` loaded rows; record its failures (appended: processes share the file)."""
        self.loaded += rows
        if not failures:
            return
        self.failed += len(failures)
        with self.path.open("a", encoding="utf-8") as file:
            for location, reason in failures:
                file.write(json.dumps({"path": location, "problem": reason, "step": step}) + "\n")
        for location, reason in failures:
            if location not in self.logged:  # one line per file, however often an epoch meets it
                self.logged.add(location)
                print(f"step {step}: replaced a row that failed to decode: {location}: {reason} (see {self.path})")

    def check(self) -> int:
        """The failures of all processes so far; raises when they exceed the allowed fraction of loaded rows.

        Every process must call it at the same step (with several processes it gathers their counts).
        """
        failed, loaded = self.failed, self.loaded
        if jax.process_count() > 1:
            gathered = multihost_utils.process_allgather(np.array([failed, loaded], dtype=np.int64))
            failed, loaded = (int(value) for value in np.asarray(gathered).reshape(-1, 2).sum(axis=0))
        # A few failures early in a run are no trend: judge the fraction from MIN_FAILURES on.
        if failed >= MIN_FAILURES and failed > self.max_fraction * loaded:
            raise TooMuchBadAudioError(
                f"{failed} of {loaded} rows loaded so far failed to decode, more than data.max_bad_fraction "
                f"({self.max_fraction:g}); the files are listed in {self.path}"
            )
        return failed
