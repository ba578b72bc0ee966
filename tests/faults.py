"""Making the operating system refuse writes in tests: a read-only directory, a full disk (a file size limit)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """An empty directory nothing can be written into (root ignores permissions: a read-only tmpfs then)."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("running as root without mount: no way to make a read-only directory")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def with_file_size_limit(max_bytes: int, command: list[str]) -> list[str]:
    """`command` run so that writes past `max_bytes` fail as on a full disk (EFBIG; Python ignores SIGXFSZ).

    The limit is set by a small Python launcher that then execs the command (the limit survives exec).
    """
    launcher = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_bytes}, {max_bytes})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", launcher, *command]


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by path relative to `root`."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run with another umask."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)
