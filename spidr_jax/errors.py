"""Errors a user can cause and fix, and how every command reports them: one line, a non-zero exit code.

Every error meant for the user (a bad file, field, flag or checkpoint; a missing optional package) subclasses
`UserError`; its message names the file or field. `exit_on_user_error` turns one into `error: <message>` on stderr
and the error's exit code, for every command alike. The operating system's own errors about files (a missing or
read-only path, a full disk) name their path too, and are reported the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Something the user can fix; reported as `error: <message>` and exit code `exit_code`."""

    exit_code = 1


class UsageError(UserError):
    """A command line that cannot work (a misspelled name, a missing argument): exit code 2, like argparse."""

    exit_code = 2


class InputError(UserError, ValueError):
    """A file or value given by the user is not what it must be; the message names it."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency is needed; the message names the pip extra that brings it."""


def report(error: BaseException) -> int:
    """Print the one line for `error`; return its exit code."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return error.exit_code if isinstance(error, UserError) else 1


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Within the block, a `UserError` or a file-system `OSError` exits the process after its one line."""
    try:
        yield
    except (UserError, OSError) as error:
        sys.exit(report(error))
