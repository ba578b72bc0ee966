"""Orbax's and TensorStore's noise around a failed checkpoint read or write, kept off the user's screen.

A failure is reported in one line (`one_line_reason`); what the libraries print around it only buries it.

The closed event loop:

When one of its many concurrent array reads or writes fails, Orbax closes its event loop while TensorStore
still completes the others; each completion then prints a traceback ending in "RuntimeError: Event loop is
closed", from native threads, possibly after the failure has been reported; asyncio also logs the exceptions
of the abandoned writes. The failure itself is reported in one line; these echoes only bury it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from absl import logging as absl_logging

_PIECES = ("RuntimeError", ": ")  # the pieces in which Python prints an exception's last line
_HEADER = "Traceback (most recent call last):"
_CLOSED_LOOP = "Event loop is closed"
_MARKERS = (
    _HEADER,
    "asyncio/base_events.py",
    "self._check_closed()",
    "raise RuntimeError('Event loop is closed')",
    "Event loop is closed",
)


class _FilteredStderr(io.TextIOBase):
    """stderr without those tracebacks; every other output, other tracebacks included, passes unchanged.

    Ordinary writes pass through at once; tracebacks and their pieces are judged by whole lines. A traceback
    is held from its header to its last line (the first unindented one) and dropped if it is about the closed
    loop. Tracebacks of concurrent threads can interleave; lines left over from such a mix are dropped when
    they carry the closed loop's markers.
    """

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target
        self._pending = ""
        self._block: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if not (self._pending or self._block or text in _PIECES or any(m in text for m in _MARKERS)):
                self.target.write(text)  # ordinary output (progress bars included) goes through unbuffered
                return len(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            kept = [line for line in map(self._judge, lines) if line is not None]
            if kept:
                self.target.write("".join(line + "\n" for line in kept))
                self.target.flush()
        return len(text)

    def _judge(self, line: str) -> str | None:
        """The text to print for a complete line (None: nothing yet, or dropped)."""
        if line.startswith(_HEADER) or self._block:
            self._block.append(line)
            ends = bool(line.strip()) and not line.startswith((" ", "\t", _HEADER))
            if not ends:
                return None
            block, self._block = self._block, []
            if any(_CLOSED_LOOP in entry for entry in block):
                return None
            return "\n".join(block)
        if not line.strip() or any(mark in line for mark in _MARKERS):
            return None
        return line

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()


def quiet_closed_loop_tracebacks() -> None:
    """From now on, drop those tracebacks from `sys.stderr` (idempotent).

    The same failed writes also leave asyncio tasks whose exception nobody retrieves (Orbax gathers them, then
    gives up): asyncio's logger reports each at garbage collection. This package runs no asyncio code of its own.
    """
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if not isinstance(sys.stderr, _FilteredStderr):
        sys.stderr = _FilteredStderr(sys.stderr)


@contextmanager
def quiet_absl(enabled: bool) -> Iterator[None]:
    """Silence absl warnings for the duration (when enabled)."""
    previous = absl_logging.get_verbosity()
    if enabled:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)


@contextmanager
def stderr_kept_on_success() -> Iterator[None]:
    """Hold what is written to stderr (fd 2) meanwhile; write it out unless the block fails.

    When one read of a restore fails, Orbax closes its event loop while TensorStore still completes the other
    reads, and each completion prints an "Event loop is closed" traceback from a native thread, past Python's
    hooks. The failure is reported in one line instead, so what was printed around it is dropped (after a
    moment for the last completions to arrive).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(1.0)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                os.write(2, held.read())


def one_line_reason(error: BaseException) -> str:
    """A one-line reason from an Orbax/TensorStore/JSON error, naming the file and array where it says them."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    line = line.split(" See full TensorStore details")[0]
    os_error = re.search(r"([^:]+) \[os_error_code='\d+'\]", text)  # TensorStore's wording of an OS error
    if os_error:
        failed_file = re.search(r'(?:writing|reading|opening): "([^"]+)"', text)
        return os_error.group(1).strip() + (f": {failed_file.group(1)}" if failed_file else "")
    paths = re.findall(r"'path': '([^']*)'", text)  # TensorStore specs: the item's directory, then the array
    directories = [path for path in paths if path.startswith("/")]
    arrays = [path.rstrip("/") for path in paths if not path.startswith("/")]
    if directories and arrays:
        line = f"{directories[-1]}{arrays[-1]}: {line}"
    return line if len(line) <= 300 else line[:297] + "..."


@contextmanager
def stderr_dropped() -> Iterator[None]:
    """Silence stderr, also at the C level, for the duration (and a moment after a failure).

    Orbax's background threads print tracebacks for a failed write, some of them after the error reached the
    caller; the failure is reported in one line instead. (`stderr_kept_on_success` keeps what a success printed.)
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    try:
        with Path(os.devnull).open("w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                if failed:
                    time.sleep(1.0)  # let the background threads finish printing into the void
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
