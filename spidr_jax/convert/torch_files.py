"""Reading and writing the reference's `.pt` files (needs the `torch` extra)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from spidr_jax.config.model import CONFIG_CLASSES, ConfigError, DinoSRConfig, model_config_from_dict
from spidr_jax.convert.fairseq import state_dict_from_fairseq
from spidr_jax.errors import MissingDependencyError, UserError

SourceFormat = Literal["spidr", "dinosr", "dinosr_fairseq"]


class CheckpointReadError(UserError, ValueError):
    """A checkpoint file could not be read; the message names the file."""


def _torch() -> Any:  # noqa: ANN401
    try:
        import torch  # noqa: PLC0415
    except ImportError as error:
        raise MissingDependencyError(
            "reading/writing PyTorch checkpoints needs torch: pip install 'spidr-jax[torch]'"
        ) from error
    return torch


def _to_numpy(value: Any) -> Any:  # noqa: ANN401
    torch = _torch()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


def load_torch_file(path: str | Path) -> dict[str, Any]:
    """torch.load a checkpoint on CPU (weights only), with one clear error for unreadable files."""
    torch, path = _torch(), Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointReadError(f"{path}: not a readable PyTorch checkpoint ({first_line})") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointReadError(f"{path}: expected a dict, found {type(checkpoint).__name__}")
    return checkpoint


def reference_state_dict(checkpoint: dict[str, Any], source: SourceFormat) -> dict[str, np.ndarray]:
    """The reference-named state_dict (numpy) of a loaded checkpoint.

    Accepts {"model": state_dict} (the released files, the reference's training checkpoints), a bare state_dict,
    either with a DDP "module." prefix, or a fairseq DinoSR checkpoint when `source` is "dinosr_fairseq".
    """
    if source == "dinosr_fairseq":
        return state_dict_from_fairseq(checkpoint)
    state = checkpoint["model"] if isinstance(checkpoint.get("model"), dict) else checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: _to_numpy(v) for k, v in state.items()}


def _expected_kind(default: Any) -> tuple[str, Callable[[Any], bool]]:  # noqa: ANN401 - a field default
    """What a JSON value of a config field with this default must be: (description, check)."""

    def number(v: Any) -> bool:  # noqa: ANN401
        return isinstance(v, int | float) and not isinstance(v, bool)

    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a number", number
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    if default and isinstance(default[0], tuple):  # the extractor's [channels, kernel, stride] layers
        return (
            "a list of [int, int, int] lists",
            lambda v: (
                isinstance(v, list | tuple)
                and all(
                    isinstance(layer, list | tuple)
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in layer)
                    for layer in v
                )
            ),
        )
    return "a list of strings", lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)


def check_field_types(model_type: str, values: dict[str, Any], where: str) -> None:
    """Raise CheckpointReadError naming `where` and the first field whose value has the wrong type."""
    # A float field may have an int default (ema_timescale: float = 20_000): the annotation decides.
    fields = {
        f.name: float(f.default) if f.type in {"float", float} else f.default
        for f in dataclasses.fields(CONFIG_CLASSES[model_type])
    }
    for name, value in values.items():
        if name in fields:
            expected, fits = _expected_kind(fields[name])
            if not fits(value):
                raise CheckpointReadError(f"{where}: model.{name} must be {expected}, got {value!r}")


def _read_config_file(config_path: Path, model_type: str, source: SourceFormat) -> dict[str, Any]:
    """The model fields of a `config.json` beside a checkpoint, checked for type."""
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointReadError(f"{config_path}: cannot read ({error})") from error
    except json.JSONDecodeError as error:
        raise CheckpointReadError(f"{config_path}: invalid JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{config_path}: expected a JSON object, got {type(data).__name__}")
    run_type = data.get("run", {}).get("model_type") if isinstance(data.get("run"), dict) else None
    if run_type is not None and run_type != model_type:
        raise CheckpointReadError(f"{config_path}: run.model_type is {run_type!r} but --model is {source!r}")
    model = data.get("model", data)
    if not isinstance(model, dict):
        raise CheckpointReadError(f"{config_path}: model must be a JSON object, got {type(model).__name__}")
    described = described_model_type(model)
    if described is not None and described != model_type:
        raise CheckpointReadError(
            f"{config_path}: its model fields describe a {described} model, but --model is {source!r}"
        )
    check_field_types(model_type, model, str(config_path))
    return model


def described_model_type(fields: dict[str, Any]) -> str | None:
    """The model type a model section tells: SpidR's own fields are there, or a whole section is without them."""
    spidr_only = {f.name for f in dataclasses.fields(CONFIG_CLASSES["spidr"])} - {
        f.name for f in dataclasses.fields(CONFIG_CLASSES["dinosr"])
    }
    if spidr_only & set(fields):
        return "spidr"
    complete = {f.name for f in dataclasses.fields(CONFIG_CLASSES["dinosr"])} <= set(fields)
    return "dinosr" if complete else None  # the reference writes every field of its config


def config_paths(checkpoint: str | Path) -> list[Path]:
    """Where a checkpoint's config is looked for: `<name>.config.json` beside it, then `config.json` there."""
    path = Path(checkpoint)
    return [path.with_name(f"{path.stem}.config.json"), path.parent / "config.json"]


def config_beside(
    path: str | Path, source: SourceFormat, overrides: dict[str, Any] | None = None
) -> tuple[DinoSRConfig, Path | None]:
    """The model config, and the file it came from (None: the defaults of `source`).

    The config is read from the file beside the checkpoint (`config_paths`; model fields under "model").
    A field of the wrong type or an inconsistent value raises an error naming the file (or `--set`) and the field.
    """
    model_type = "dinosr" if source.startswith("dinosr") else "spidr"
    values: dict[str, Any] = {"encoder_qkv_bias": True} if source == "dinosr_fairseq" else {}
    config_path = next((candidate for candidate in config_paths(path) if candidate.is_file()), None)
    where = "the default config"
    if config_path is not None:
        values |= _read_config_file(config_path, model_type, source)
        where = str(config_path)
    check_field_types(model_type, overrides or {}, "--set")
    values |= overrides or {}
    try:
        return model_config_from_dict(model_type, values), config_path
    except ConfigError as error:
        raise ConfigError(f"{where}{' with --set' if overrides else ''}: {error}") from error


def save_torch_state_dict(state_dict: dict[str, np.ndarray], target: str | Path | IO[bytes]) -> None:
    """Write {"model": state_dict} with torch.save, to a path or an open binary file."""
    torch = _torch()
    target = Path(target) if isinstance(target, str | Path) else target
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}}, target)
