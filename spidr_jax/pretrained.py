"""Pretrained models in Python: converted model directories and training workdirs, loaded as SpidR/DinoSR modules.

The on-disk layouts are described (and read and written) in `spidr_jax.storage`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spidr_jax.config.loading import config_from_json
from spidr_jax.config.model import DinoSRConfig, model_config_from_dict
from spidr_jax.errors import UserError
from spidr_jax.models import DinoSR, build_model
from spidr_jax.storage import checkpoint_items, model_dir
from spidr_jax.storage.model_dir import CONFIG_FILE, STATE_DIR, is_training_workdir


class PretrainedFormatError(UserError, ValueError):
    """A directory is not a readable converted model; the message names the path."""


def _stringify_keys(tree: Any) -> Any:  # noqa: ANN401
    if isinstance(tree, dict):
        return {str(k): _stringify_keys(v) for k, v in tree.items()}
    return tree


def _restore_int_keys(tree: Any) -> Any:  # noqa: ANN401
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _restore_int_keys(v) for k, v in tree.items()}
    return tree


def model_state_tree(model: DinoSR) -> dict:
    """The model's full state as a pure nested dict of numpy arrays."""
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


def abstract_model(cfg: DinoSRConfig, dtype: jnp.dtype = jnp.float32) -> DinoSR:
    """A model with shapes only (no initialization cost), to be filled from a checkpoint."""
    graphdef, state = _abstract_split(cfg, jnp.dtype(dtype))
    return nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf, state))  # a fresh State: callers may fill it


@functools.lru_cache(maxsize=4)
def _abstract_split(cfg: DinoSRConfig, dtype: jnp.dtype) -> tuple[nnx.GraphDef, nnx.State]:
    """Tracing the constructor takes about half a second, and loading a model asks for it twice (checks, then fill)."""
    return nnx.split(nnx.eval_shape(lambda: build_model(cfg, dtype=dtype)))


def check_tree_fits(tree: dict, cfg: DinoSRConfig, where: str, *, teacher: bool = True) -> None:
    """Raise PretrainedFormatError naming keys/shapes of `tree` that do not fit `cfg` (no teacher unless `teacher`)."""
    expected = nnx.to_pure_dict(nnx.state(abstract_model(cfg)))
    if not teacher:
        del expected["teacher"]
    exp_flat = {"/".join(map(str, k)): v.shape for k, v in _flatten(expected).items()}
    got_flat = {"/".join(map(str, k)): np.shape(v) for k, v in _flatten(tree).items()}
    missing = sorted(set(exp_flat) - set(got_flat))
    unexpected = sorted(set(got_flat) - set(exp_flat))
    wrong = [
        f"{k} {got_flat[k]} (expected {exp_flat[k]})" for k in exp_flat if k in got_flat and got_flat[k] != exp_flat[k]
    ]
    problems = [
        f"{name}: {', '.join(items[:8])}"
        for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
        if items
    ]
    if problems:
        raise PretrainedFormatError(f"{where}: parameters do not fit the config: " + "; ".join(problems))


def _flatten(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:  # noqa: ANN401
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out |= _flatten(v, (*prefix, k))
        return out
    return {prefix: tree}


def model_from_tree(cfg: DinoSRConfig, tree: dict, *, dtype: jnp.dtype = jnp.float32) -> DinoSR:
    """Build a model of `cfg` holding the arrays of `tree` (a pure dict as produced by `model_state_tree`).

    A tree read for inference has no teacher (which inference never runs): the model's teacher then holds the
    student's arrays, so that the module is complete without reading or storing the teacher's weights.
    """
    graphdef, state = nnx.split(abstract_model(cfg, dtype))
    # One transfer for the whole tree: jnp.asarray dispatches an operation per array (about 1 s for SpidR base).
    arrays = jax.device_put(tree)
    if "teacher" not in arrays:
        arrays = {**arrays, "teacher": arrays["student"]}  # the same arrays, not copies
    nnx.replace_by_pure_dict(state, arrays)
    return nnx.merge(graphdef, state)


def save_pretrained(output_dir: str | Path, cfg: DinoSRConfig, tree: dict) -> Path:
    """Write a converted model directory atomically: built in a temporary sibling, renamed at the end."""
    output_dir = Path(output_dir).resolve()
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; choose a new output directory")
    check_tree_fits(tree, cfg, str(output_dir))
    model_dir.write_model_dir(output_dir, cfg.model_type, cfg.to_dict(), _stringify_keys(tree))
    return output_dir


def read_config(path: str | Path) -> DinoSRConfig:
    """The model config of a converted directory."""
    config_path = Path(path) / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        return model_config_from_dict(data["run"]["model_type"], data["model"])
    except FileNotFoundError as error:
        raise PretrainedFormatError(f"{config_path}: missing (is {path} a converted model directory?)") from error
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise PretrainedFormatError(f"{config_path}: not a spidr_jax model config ({error!r})") from error


def read_pretrained(path: str | Path, *, teacher: bool = True, step: int | None = None) -> tuple[DinoSRConfig, dict]:
    """(config, numpy state tree) of a converted directory, or of a training workdir's checkpoint.

    A workdir's checkpoint is the one at `step`, by default its newest intact one; a converted directory holds one
    step. Without `teacher`, the teacher's weights are not read (half of the restore): enough for inference.
    """
    path = Path(path)
    if is_training_workdir(path):
        cfg, tree, _ = read_workdir(path, step, teacher=teacher)
        return cfg, tree
    if step is not None:
        raise PretrainedFormatError(
            f"{path}: a converted model holds one step; a step is chosen among a training workdir's checkpoints"
        )
    cfg = read_config(path)
    state_path = (path / STATE_DIR).resolve()
    if not state_path.is_dir():
        raise PretrainedFormatError(f"{state_path}: missing Orbax state directory")
    try:
        tree = model_dir.read_model_dir_state(path, teacher=teacher)
    except Exception as error:  # Orbax raises many types for damaged checkpoints
        raise PretrainedFormatError(f"{state_path}: unreadable Orbax checkpoint ({type(error).__name__})") from error
    tree = _restore_int_keys(jax.tree.map(np.asarray, tree))
    check_tree_fits(tree, cfg, str(path), teacher=teacher)
    return cfg, tree


def read_workdir(path: str | Path, step: int | None = None, *, teacher: bool = True) -> tuple[DinoSRConfig, dict, int]:
    """(model config, numpy state tree, step) of a training workdir's checkpoint (the newest intact by default)."""
    path = Path(path)
    cfg = config_from_json(path / CONFIG_FILE).model
    try:
        tree, step = checkpoint_items.read_workdir_model(path, step, teacher=teacher)
    except checkpoint_items.DamagedCheckpointError as error:
        raise PretrainedFormatError(str(error)) from error
    tree = _restore_int_keys(tree)
    check_tree_fits(tree, cfg, str(path), teacher=teacher)
    return cfg, tree, step


def checkpoint_kind(path: str | Path) -> str:
    """How the commands name what they read: "training workdir" or "converted model"."""
    return "training workdir" if is_training_workdir(path) else "converted model"


def describe_checkpoint_at(path: str | Path, step: int) -> str:
    """`PATH (converted model, step N)` or `PATH (training workdir, step N)`: what every command prints first."""
    return f"{Path(path).resolve()} ({checkpoint_kind(path)}, step {step})"


def describe_checkpoint(path: str | Path, model: DinoSR) -> str:
    """`describe_checkpoint_at` with the model's step."""
    return describe_checkpoint_at(path, int(np.asarray(model.current_step[...])))


def load_pretrained(
    path: str | Path, *, dtype: jnp.dtype = jnp.float32, teacher: bool = True, step: int | None = None
) -> DinoSR:
    """A ready SpidR/DinoSR model from a converted directory or a training workdir's checkpoint.

    Converted directories come from `python -m spidr_jax.convert torch-to-orbax`; of a workdir, the checkpoint at
    `step` is read (by default its newest intact one). With `teacher=False` the teacher's weights (half of them)
    are not read, and the teacher holds the student's: for inference, which never runs the teacher.
    """
    cfg, tree = read_pretrained(path, teacher=teacher, step=step)
    return model_from_tree(cfg, tree, dtype=dtype)
