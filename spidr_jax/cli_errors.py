"""One clear line and a non-zero exit for the errors a user can cause (bad file, bad config, bad checkpoint)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from spidr_jax.config.model import ConfigError
from spidr_jax.errors import MissingDependencyError
from spidr_jax.interop.torch_files import CheckpointReadError
from spidr_jax.interop.torch_layout import StateDictMismatchError
from spidr_jax.pretrained import PretrainedFormatError

USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointReadError,
    ConfigError,
    FileExistsError,
    FileNotFoundError,
    MissingDependencyError,
    PretrainedFormatError,
    StateDictMismatchError,
)


@contextmanager
def exit_on_error(extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn expected user errors into `error: <message>` on stderr and exit code 1."""
    try:
        yield
    except USER_ERRORS + extra as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
