"""Progress of long work: a live bar in a terminal, plain lines in a log file (SLURM jobs, CI, `> log`).

`make_progress()` gives rich's bar when stderr is a terminal; otherwise `LineProgress`, which prints one line per
tenth of the work or per minute, whichever comes first (never two within 5 s), and a last line when it ends.
Both take the same calls: `add_task(description, total=..., status="")`, `update(task, advance=..., status=...)`,
`advance(task)`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Self, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
LINE_FRACTION = 0.1  # a line per tenth of the work ...
LINE_SECONDS = 60.0  # ... or per minute, whichever comes first
QUIET_SECONDS = 5.0  # but no two lines closer than this, but for the last: quick work gets one line


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (stderr by default) is a terminal, where a live bar can redraw itself."""
    stream = sys.stderr if stream is None else stream
    return hasattr(stream, "isatty") and stream.isatty()


def duration(seconds: float) -> str:
    """`42s`, `3m05s` or `2h07m`."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    status: str
    started: float
    start_completed: float  # what was done before this run (a resumed count): not part of the rate
    last_line: float
    last_fraction: float
    finished: bool = False


class LineProgress:
    """Progress as plain lines on stderr, for logs: every tenth of the work or every minute, and at the end."""

    def __init__(
        self, stream: IO[str] | None = None, *, fraction: float = LINE_FRACTION, seconds: float = LINE_SECONDS
    ) -> None:
        self.stream = stream
        self.fraction, self.seconds = fraction, seconds
        self.tasks: list[_Task] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for task in self.tasks:
            if not task.finished and task.completed > task.start_completed:
                self._print(task)  # where the work stopped

    def add_task(self, description: str, *, total: float | None = None, completed: float = 0, status: str = "") -> int:
        """A task to report on; its id."""
        now = time.monotonic()
        self.tasks.append(
            _Task(description, total, completed, status, now, completed, now, self._fraction_of(total, completed))
        )
        return len(self.tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        advance: float = 0,
        completed: float | None = None,
        total: float | None = None,
        status: str | None = None,
    ) -> None:
        """Move a task on; print a line when a tenth of the work or a minute has passed since the last one."""
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        task.completed = task.completed + advance if completed is None else completed
        if status is not None:
            task.status = status
        fraction = self._fraction_of(task.total, task.completed)
        done = task.total is not None and task.completed >= task.total
        now = time.monotonic()
        since = now - task.last_line
        tenth = fraction - task.last_fraction >= self.fraction and since >= QUIET_SECONDS
        if done or tenth or since >= self.seconds:
            if not task.finished:
                self._print(task)
            task.last_line, task.last_fraction, task.finished = now, fraction, done

    def advance(self, task_id: int, advance: float = 1) -> None:
        """`update(task_id, advance=advance)`."""
        self.update(task_id, advance=advance)

    @staticmethod
    def _fraction_of(total: float | None, completed: float) -> float:
        return completed / total if total else 0.0

    def _print(self, task: _Task) -> None:
        elapsed = time.monotonic() - task.started
        parts = [f"{task.description}: {task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "")]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        parts.append(duration(elapsed))
        rate = (task.completed - task.start_completed) / elapsed if elapsed > 0 else 0.0
        if task.total is not None and rate > 0 and task.completed < task.total:
            parts.append(f"ETA {duration((task.total - task.completed) / rate)}")
        if task.status:
            parts.append(task.status)
        print(", ".join(parts), file=self.stream or sys.stderr, flush=True)


def make_progress(*, disable: bool = False) -> Progress | LineProgress:
    """A progress display on stderr: a live bar in a terminal, plain lines in logs; nothing with `disable`."""
    console = Console(file=sys.stderr)
    if not disable and not console.is_terminal:
        return LineProgress()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=disable,
        refresh_per_second=2,
    )


def track(iterable: Iterable[T], *, total: int | None, description: str, disable: bool = False) -> Iterator[T]:
    """Iterate with a progress display."""
    with make_progress(disable=disable) as progress:
        task = progress.add_task(description, total=total, status="")
        for item in iterable:
            yield item
            progress.advance(task)
