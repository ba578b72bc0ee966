"""Checks on the submitting machine, so that a bad config fails here in one line rather than in the queue."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

from spidr_jax.config.cli import ConfigError, parse_config, require_fields
from spidr_jax.config.run import Config
from spidr_jax.errors import UsageError


def check_train_configs(configs: Sequence[str], overrides: Sequence[str]) -> list[Config]:
    """The resolved config of every job; raises `UsageError` naming the config file and the field.

    Two jobs may not share a workdir: their checkpoints would overwrite each other.
    """
    resolved = []
    workdirs: dict[Path, str] = {}
    for spec in configs:
        try:
            cfg = parse_config([f"--config={spec}", *overrides], strict=True)
            require_fields(cfg, ["run.workdir", "data.manifest"])
        except ConfigError as error:
            raise UsageError(f"{spec}: {error}") from None
        for name, path in [("data.manifest", cfg.data.manifest)] + [
            (f"validation.{key}.manifest", entry.manifest) for key, entry in cfg.validation.items()
        ]:
            if path and not Path(path).is_file():
                raise UsageError(f"{spec}: {name}: file not found: {path}")
        workdir = Path(cfg.run.workdir).resolve()
        if workdir in workdirs:
            raise UsageError(f"{spec}: run.workdir {cfg.run.workdir} is also the workdir of {workdirs[workdir]}")
        workdirs[workdir] = spec
        resolved.append(cfg)
    return resolved


def check_extract_args(args: Sequence[str]) -> None:
    """The extraction's own argument parsing, and its inputs exist; raises `UsageError`."""
    from spidr_jax.extract.cli import parse_args  # noqa: PLC0415 (loads JAX: only for extraction jobs)

    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            parsed = parse_args(list(args))
    except SystemExit:
        # argparse's last line is "PROG: error: MESSAGE" (after the usage); --help exits 0 after its text.
        lines = messages.getvalue().strip().splitlines() or ["invalid arguments"]
        raise UsageError(f"extract: {lines[-1].split('error: ', 1)[-1]}") from None
    for name in ("checkpoint", "manifest"):
        path = Path(getattr(parsed, name))
        if not path.exists():
            raise UsageError(f"extract --{name}: not found: {path}")
