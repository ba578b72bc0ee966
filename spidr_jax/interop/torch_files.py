"""Reading and writing the reference's `.pt` files (needs the `torch` extra)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spidr_jax.config.model import DinoSRConfig, model_config_from_dict
from spidr_jax.errors import MissingDependencyError
from spidr_jax.interop.fairseq import state_dict_from_fairseq

SourceFormat = Literal["spidr", "dinosr", "dinosr_fairseq"]


class CheckpointReadError(ValueError):
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


def config_beside(path: str | Path, source: SourceFormat, overrides: dict[str, Any] | None = None) -> DinoSRConfig:
    """Model config from `config.json` next to the checkpoint (model fields under "model"), else the defaults."""
    model_type = "dinosr" if source.startswith("dinosr") else "spidr"
    values: dict[str, Any] = {"encoder_qkv_bias": True} if source == "dinosr_fairseq" else {}
    config_path = Path(path).parent / "config.json"
    if config_path.is_file():
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CheckpointReadError(f"{config_path}: invalid JSON ({error})") from error
        run_type = data.get("run", {}).get("model_type") if isinstance(data.get("run"), dict) else None
        if run_type is not None and run_type != model_type:
            raise CheckpointReadError(f"{config_path}: run.model_type is {run_type!r} but --model is {source!r}")
        values |= data.get("model", data)
    values |= overrides or {}
    return model_config_from_dict(model_type, values)


def save_torch_state_dict(state_dict: dict[str, np.ndarray], path: str | Path) -> None:
    """Write {"model": state_dict} with torch.save."""
    torch = _torch()
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}}, Path(path))
