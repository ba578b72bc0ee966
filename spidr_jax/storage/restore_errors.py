"""Telling a damaged checkpoint from a restore that failed for another reason.

A checkpoint is set aside as damaged only on evidence about its data: an array whose checksum differs or that
holds NaN/inf (found by the caller), or a file inside it that is missing or garbled (TensorStore's NOT_FOUND,
OUT_OF_RANGE, DATA_LOSS, INVALID_ARGUMENT; a JSON file that does not parse; an item that is not there). Any other
failure says nothing about the checkpoint (a relative path, a permission, a storage timeout, too many open files,
host memory): a good checkpoint must not be set aside for it, so it is reported as what it is.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator

from spidr_jax.errors import UserError

DAMAGE_CODES = frozenset({"NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS", "INVALID_ARGUMENT"})
OTHER_CODES = frozenset({"PERMISSION_DENIED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"})
DAMAGE_TYPES = (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError, KeyError, EOFError)
_STATUS = re.compile(r"^\s*([A-Z_]{5,}):")  # TensorStore's and XLA's status codes lead their messages
_OS_ERROR = re.compile(r"os_error_code='?(\d+)")


class CheckpointUnreadableError(UserError, RuntimeError):
    """A checkpoint could not be read for a reason that is not its damage; nothing was set aside."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and the ones it was raised from or during."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _says_other(error: BaseException) -> bool:
    """Whether this error is about something other than the checkpoint's data."""
    if isinstance(error, MemoryError | TimeoutError | ConnectionError | PermissionError):
        return True
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        return True
    text = str(error)
    status = _STATUS.match(text)
    if status and status.group(1) in OTHER_CODES:
        return True
    os_error = _OS_ERROR.search(text)
    if os_error and int(os_error.group(1)) != errno.ENOENT:
        return True
    return "should be absolute" in text  # Orbax refuses relative paths


def _says_damage(error: BaseException) -> bool:
    """Whether this error is evidence of a missing or garbled file inside the checkpoint."""
    if isinstance(error, DAMAGE_TYPES):
        return True
    status = _STATUS.match(str(error))
    return bool(status) and status.group(1) in DAMAGE_CODES


def is_damage(error: BaseException) -> bool:
    """Whether a failed restore is evidence that the checkpoint's files are missing or garbled."""
    chain = list(_chain(error))
    return not any(map(_says_other, chain)) and any(map(_says_damage, chain))
