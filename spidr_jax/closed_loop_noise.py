"""Quieting one kind of noise that Orbax leaves on stderr when a checkpoint read or write fails.

When one of its many concurrent array reads or writes fails, Orbax closes its event loop while TensorStore
still completes the others; each completion then prints a traceback ending in "RuntimeError: Event loop is
closed", from native threads, possibly after the failure has been reported. The failure itself is reported in
one line; these echoes only bury it.
"""

from __future__ import annotations

import io
import sys
import threading

_MARKERS = (
    "Traceback (most recent call last):",
    "asyncio/base_events.py",
    "self._check_closed()",
    "raise RuntimeError('Event loop is closed')",
    "Event loop is closed",
)


class _FilteredStderr(io.TextIOBase):
    """stderr without the lines of those tracebacks (whole lines are judged, so pieces are buffered)."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            kept = [line for line in lines if line.strip() and not any(mark in line for mark in _MARKERS)]
            if kept:
                self.target.write("".join(line + "\n" for line in kept))
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()


def quiet_closed_loop_tracebacks() -> None:
    """From now on, drop those traceback lines from `sys.stderr` (idempotent; for a process about to stop)."""
    if not isinstance(sys.stderr, _FilteredStderr):
        sys.stderr = _FilteredStderr(sys.stderr)
