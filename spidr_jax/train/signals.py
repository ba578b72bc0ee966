"""SIGTERM/SIGINT during training: remember the signal so the loop saves a checkpoint and stops cleanly.

With several JAX processes, every process must stop at the same step: one that stops alone (to save) leaves the
others waiting in a step that never completes. There SIGTERM is left to JAX's preemption service (started by
`jax.distributed.initialize`), which catches it on any process, at any time (also before the loop), and `poll`
reports it on every process at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType
from typing import Self

import jax
from jax.experimental import multihost_utils

INTERRUPTED = "interrupted: stopped at once; a restart resumes from the newest checkpoint"


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set `received` instead of killing the process.

    A second SIGINT ends the process at once (Ctrl-C twice), keeping the newest complete checkpoint.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._preemption_service = (
            jax.process_count() > 1 and jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service
        )

    def poll(self, step: int) -> int | None:
        """The signal to stop for, if any; call it after every step, with the same step on every process."""
        if self._preemption_service and multihost_utils.reached_preemption_sync_point(step):
            self.received = self.received or signal.SIGTERM
        return self.received

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            # The second Ctrl-C: stop now. An exception raised here could land inside the input pipeline's or
            # Orbax's threads' bookkeeping and hang the exit; leaving at once is safe: a checkpoint being written
            # is only committed when complete (a restart resumes from the newest complete one), the workdir's
            # lock is stale once this process is gone, and the data workers exit with their parent.
            print(INTERRUPTED, file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)
        self.received = signum

    def __enter__(self) -> Self:
        for signum in (signal.SIGINT,) if self._preemption_service else self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
