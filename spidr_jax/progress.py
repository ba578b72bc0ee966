"""Progress bars for long work (rich, which flax already depends on)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def make_progress(*, disable: bool = False) -> Progress:
    """A Progress on stderr: a live bar in a terminal, periodic lines in logs (SLURM, CI)."""
    console = Console(file=sys.stderr)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=disable,
        refresh_per_second=2 if console.is_terminal else 0.1,
    )


def track(iterable: Iterable[T], *, total: int | None, description: str, disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar."""
    with make_progress(disable=disable) as progress:
        task = progress.add_task(description, total=total, status="")
        for item in iterable:
            yield item
            progress.advance(task)
