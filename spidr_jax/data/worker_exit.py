"""Grain worker start-up: workers never outlive the trainer."""

from __future__ import annotations

import os
import threading
import time


class ExitWithTrainer:
    """Grain worker init (picklable): the worker exits as soon as the trainer is gone, however it died.

    The trainer's pid is taken in the trainer itself, so a worker started around its death knows whom to watch.
    """

    def __init__(self) -> None:
        self.trainer = os.getpid()

    def __call__(self, _worker_index: int, _worker_count: int) -> None:
        """Start the watch (in the worker, as it starts)."""
        threading.Thread(target=self._watch, name="exit-with-trainer", daemon=True).start()

    def _watch(self) -> None:
        while _alive(self.trainer):
            time.sleep(1.0)
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process may not be signalled)
    return True
