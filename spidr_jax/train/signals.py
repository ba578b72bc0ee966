"""SIGTERM/SIGINT during training: remember the signal so the loop saves a checkpoint and stops cleanly."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Self


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set `received` instead of killing the process.

    A second SIGINT restores the default behaviour (so Ctrl-C twice still stops at once).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.received = signum

    def __enter__(self) -> Self:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
