"""Conversions between the reference's PyTorch checkpoints and this package's converted-model directories."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spidr_jax.convert.torch_files import (
    SourceFormat,
    config_beside,
    load_torch_file,
    reference_state_dict,
    save_torch_state_dict,
)
from spidr_jax.convert.torch_layout import StateDictMismatchError, state_dict_to_tree, tree_to_state_dict
from spidr_jax.errors import InputError, UserError
from spidr_jax.pretrained import PretrainedFormatError, read_pretrained, save_pretrained
from spidr_jax.storage.file_modes import apply_umask, file_mode


class ConversionWriteError(UserError, ValueError):
    """The output could not be written (disk full, read-only directory); the message names the path."""


def _missing_ancestors(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first (to remove them again after a failure)."""
    return [parent for parent in path.parents if not parent.exists()]


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _write_reason(error: BaseException) -> str:
    """The operating system's reason (TensorStore, under Orbax, reports it as `[os_error_code='28']`)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code:
        return os.strerror(int(code.group(1)))
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence stderr, also at the C level, for the duration (and a moment after a failure).

    Orbax's background threads print tracebacks for a failed write, some of them after the error reached the
    caller; the failure is reported in one line instead.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    try:
        with Path(os.devnull).open("w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                if failed:
                    time.sleep(1.0)  # let the background threads finish printing into the void
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def torch_to_orbax(
    input_path: str | Path, output_dir: str | Path, source: SourceFormat, overrides: dict[str, Any] | None = None
) -> Path:
    """Convert a reference (or fairseq DinoSR) checkpoint into a converted-model directory; returns its path.

    Nothing is left behind on failure: the directory is built under a temporary name and renamed at the end.
    """
    cfg = config_beside(input_path, source, overrides)
    state_dict = reference_state_dict(load_torch_file(input_path), source)
    try:
        tree = state_dict_to_tree(state_dict, cfg)
    except StateDictMismatchError as error:
        raise type(error)(f"{input_path}: {error}") from error
    output_dir = Path(output_dir).resolve()
    created = _missing_ancestors(output_dir)
    try:
        with _quiet_stderr():
            out = save_pretrained(output_dir, cfg, tree)
        apply_umask(out)  # the temporary directory it was built in is 0700
    except (FileExistsError, PretrainedFormatError):
        raise
    except Exception as error:  # OSError, or Orbax/TensorStore's own wrapping of it (ValueError, RuntimeError)
        if output_dir.exists() and not output_dir.is_symlink():
            shutil.rmtree(output_dir, ignore_errors=True)
        _remove_empty(created)
        raise ConversionWriteError(f"cannot write {output_dir}: {_write_reason(error)}") from error
    return out


def orbax_to_torch(input_dir: str | Path, output_path: str | Path) -> Path:
    """Write {"model": state_dict} loadable with strict=True into the reference model of the same config.

    A `config.json` in the reference's layout is written next to the file unless one is already there, so the
    reference's `build_model(checkpoint=...)` finds the config.
    """
    cfg, tree = read_pretrained(Path(input_dir).resolve())  # Orbax refuses relative paths
    state_dict = tree_to_state_dict(tree, cfg)
    output_path = Path(output_path).resolve()
    created = _missing_ancestors(output_path)
    tmp_name = None
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent)
        os.close(fd)
        save_torch_state_dict(state_dict, tmp_name)
        Path(tmp_name).chmod(file_mode())  # mkstemp creates 0600
        Path(tmp_name).replace(output_path)
        config_path = output_path.parent / "config.json"
        if not config_path.exists():
            config = {"run": {"model_type": cfg.model_type}, "model": cfg.to_dict()}
            config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as RuntimeError
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        _remove_empty(created)
        raise ConversionWriteError(f"cannot write {output_path}: {_write_reason(error)}") from error
    return output_path


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> dict; values are JSON when they parse (true, 3, [..]) and strings otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise InputError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return out
