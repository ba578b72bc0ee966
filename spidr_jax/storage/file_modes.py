"""Permissions of what the package writes: what the umask gives, also for files made private by `tempfile`.

`tempfile.mkstemp` creates files 0600 and `mkdtemp` directories 0700 whatever the umask; files written under a
temporary name and renamed would keep those modes, so they are opened up to the umask's default first.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process umask, read from /proc where there is one (os.umask can only read it by changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a regular file created under the current umask (0644 for umask 022)."""
    return 0o666 & ~umask()


def directory_mode() -> int:
    """Permissions of a directory created under the current umask (0755 for umask 022)."""
    return 0o777 & ~umask()


def apply_umask(root: str | Path) -> None:
    """Give `root` and everything under it the umask's default permissions."""
    root = Path(root)
    root.chmod(directory_mode() if root.is_dir() else file_mode())
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            Path(directory, name).chmod(directory_mode())
        for name in files:
            Path(directory, name).chmod(file_mode())
