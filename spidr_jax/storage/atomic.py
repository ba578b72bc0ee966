"""Files that are complete or absent: written under a temporary name in their directory, then renamed.

A failed write (disk full, read-only directory) raises `WriteError` naming the path and the system's reason, and
leaves no temporary file behind. Created files get the permissions the umask gives (`tempfile` makes them private).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from spidr_jax.errors import UserError
from spidr_jax.storage.file_modes import file_mode


class WriteError(UserError):
    """Something could not be written; the message names the path and the reason."""


def write_failure(path: Path, error: OSError) -> WriteError:
    """The one-line error for a failed write of `path`."""
    return WriteError(f"cannot write {path}: {error.strerror or error}")


def make_directory(path: Path) -> None:
    """Create a directory (and parents) with the umask's permissions."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failure(path, error) from error


def write_atomically(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file under a temporary name in its directory, then rename it: it is complete or absent."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise write_failure(target, error) from error
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        tmp.chmod(file_mode())  # mkstemp creates 0600
        tmp.replace(target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_failure(target, error) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    """A text file (UTF-8), atomically."""
    write_atomically(target, lambda file: file.write(text.encode("utf-8")))


def write_json(target: Path, data: dict) -> None:
    """A JSON file, atomically."""
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_tree(path: Path, *, settle_s: float = 1.0, deadline_s: float = 30.0) -> None:
    """Remove a directory tree that late writers may still add to, or even create again.

    After a failed save, TensorStore's writes already under way go on and create the directories they need, so
    the tree is removed until it has stayed absent for `settle_s` (at most `deadline_s`).
    """
    deadline = time.monotonic() + deadline_s
    absent_since = None
    while time.monotonic() < deadline:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            absent_since = None
        elif absent_since is None:
            absent_since = time.monotonic()
        elif time.monotonic() - absent_since >= settle_s:
            return
        time.sleep(0.05)
