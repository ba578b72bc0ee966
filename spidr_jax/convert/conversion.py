"""Conversions between the reference's PyTorch checkpoints and this package's converted-model directories."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.convert.torch_files import (
    SourceFormat,
    config_beside,
    config_paths,
    load_torch_file,
    reference_state_dict,
    save_torch_state_dict,
)
from spidr_jax.convert.torch_layout import StateDictMismatchError, state_dict_to_tree, tree_to_state_dict
from spidr_jax.errors import InputError, UserError
from spidr_jax.pretrained import PretrainedFormatError, describe_checkpoint_at, read_pretrained, save_pretrained
from spidr_jax.storage.atomic import WriteError, write_atomically, write_text
from spidr_jax.storage.file_modes import apply_umask
from spidr_jax.storage.orbax_noise import stderr_dropped


class ConversionWriteError(UserError, ValueError):
    """The output could not be written (disk full, read-only directory); the message names the path."""


class OutputExistsError(UserError, FileExistsError):
    """The output is there already (or a config file there describes another model); `--overwrite` replaces it."""


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def torch_to_orbax(
    input_path: str | Path,
    output_dir: str | Path,
    source: SourceFormat,
    overrides: dict[str, Any] | None = None,
    *,
    say: Callable[[str], None] = _note,
) -> Path:
    """Convert a reference (or fairseq DinoSR) checkpoint into a converted-model directory; returns its path.

    Nothing is left behind on failure: the directory is built under a temporary name and renamed at the end.
    Without a config file beside the checkpoint, `say` hears which defaults were used.
    """
    cfg, config_file = config_beside(input_path, source, overrides)
    state_dict = reference_state_dict(load_torch_file(input_path), source)
    try:
        tree = state_dict_to_tree(state_dict, cfg)
    except StateDictMismatchError as error:
        raise type(error)(f"{input_path}: {error}") from error
    output_dir = Path(output_dir).resolve()
    created = _missing_ancestors(output_dir)
    try:
        with stderr_dropped():
            out = save_pretrained(output_dir, cfg, tree)
        apply_umask(out)  # the temporary directory it was built in is 0700
    except (FileExistsError, PretrainedFormatError):
        raise
    except Exception as error:  # OSError, or Orbax/TensorStore's own wrapping of it (ValueError, RuntimeError)
        if output_dir.exists() and not output_dir.is_symlink():
            shutil.rmtree(output_dir, ignore_errors=True)
        _remove_empty(created)
        raise ConversionWriteError(f"cannot write {output_dir}: {_write_reason(error)}") from error
    if config_file is None:
        say(
            f"note: no config file beside {input_path} ({' or '.join(p.name for p in config_paths(input_path))}): "
            f"converted with {'DinoSR' if cfg.model_type == 'dinosr' else 'SpidR'} base's configuration (--model "
            f"{source}){' and --set' if overrides else ''}; for another model, give its config"
        )
    return out


def reference_config(cfg: DinoSRConfig) -> dict[str, Any]:
    """A model's config in the reference's run-config layout (what its `build_model(checkpoint=...)` reads)."""
    return {"run": {"model_type": cfg.model_type}, "model": cfg.to_dict()}


def orbax_to_torch(
    input_dir: str | Path,
    output_path: str | Path,
    *,
    overwrite: bool = False,
    config_json: bool = False,
    step: int | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write {"model": state_dict} loadable with strict=True into the reference model of the same config.

    The model's config goes beside it as `<name>.config.json` (which `torch_to_orbax` reads back); with
    `config_json`, also as `config.json` in that folder, where the reference's `build_model(checkpoint=...)` looks.
    An existing output (or a `config.json` there that describes another model) is refused unless `overwrite`. The
    files appear together or not at all. `step` picks a training workdir's checkpoint; `say` hears which was read.
    """
    output_path = Path(output_path).resolve()
    targets = {output_path.with_name(f"{output_path.stem}.config.json"): "its config"}
    if config_json:
        targets[output_path.parent / "config.json"] = "config.json"
    if not overwrite and output_path.exists():  # refused before the checkpoint is read
        raise OutputExistsError(f"{output_path} exists; pass --overwrite to replace it")
    cfg, tree = read_pretrained(Path(input_dir).resolve(), step=step)  # Orbax refuses relative paths
    if say is not None:
        say(f"checkpoint: {describe_checkpoint_at(input_dir, int(tree['current_step']))}")
    config_text = json.dumps(reference_config(cfg), indent=2) + "\n"
    if not overwrite:
        _refuse_other_configs(output_path, targets, config_text)
    state_dict = tree_to_state_dict(tree, cfg)
    created = _missing_ancestors(output_path)
    written: list[Path] = []
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        for config_path in targets:
            write_text(config_path, config_text)
            written.append(config_path)
        write_atomically(output_path, lambda file: save_torch_state_dict(state_dict, file))
    except (WriteError, RuntimeError, OSError) as error:  # torch.save reports a failed write as RuntimeError
        for path in written:
            path.unlink(missing_ok=True)
        _remove_empty(created)
        reason = _write_reason(error.__cause__ or error) if isinstance(error, WriteError) else _write_reason(error)
        raise ConversionWriteError(f"cannot write {output_path}: {reason}") from error
    return output_path


def _refuse_other_configs(output_path: Path, configs: dict[Path, str], config_text: str) -> None:
    """Raise OutputExistsError for a config there already that describes another model."""
    for path, name in configs.items():
        if path.exists() and path.read_text(encoding="utf-8", errors="replace") != config_text:
            raise OutputExistsError(
                f"{path} exists and describes another model than {output_path} ({name}); pass --overwrite to replace it"
            )


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
