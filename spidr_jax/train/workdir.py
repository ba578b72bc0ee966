"""The run's working directory (its config) and the host-to-device hand-off of batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spidr_jax.config.model import ConfigError
from spidr_jax.config.run import Config
from spidr_jax.data.load_batch import BAD_AUDIO
from spidr_jax.train.config_history import check_restart


def local_workdir(workdir: str) -> Path:
    """`run.workdir` as an absolute path; URLs are refused (every process writes its part of each checkpoint)."""
    if "://" in workdir:
        raise ConfigError(f"run.workdir must be a local or mounted path, not a URL: {workdir}")
    return Path(workdir).expanduser().resolve()


def prepare_workdir(cfg: Config, *, write: bool, say: Callable[[str], None]) -> Path:
    """Check a restart's config against the run's (`config_history.check_restart`) and create the workdir."""
    workdir = local_workdir(cfg.run.workdir)
    check_restart(cfg, workdir, say)
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of every batch array split over 'data'."""
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Rows of this process -> global arrays sharded over 'data' (the rows of all processes, in process order)."""
    sharding = batch_sharding(mesh)
    out = {}
    for name, local in host_batch.items():
        if name == BAD_AUDIO:
            continue  # host-side only: the rows that failed to decode
        shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
        out[name] = jax.make_array_from_process_local_data(sharding, local, shape)
    return out


def abstract_batch(
    batch_size: int, samples: int, frames: int, mesh: Mesh, *, channels: int | None, padded: bool = False
) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one global training batch, for compiling ahead of the loop (`padded`: with row lengths)."""
    sharding = batch_sharding(mesh)
    batch = {
        "waveforms": jax.ShapeDtypeStruct((batch_size, samples), np.float32, sharding=sharding),
        "mask": jax.ShapeDtypeStruct((batch_size, frames), np.bool_, sharding=sharding),
    }
    if channels is not None:
        batch["channel_mask"] = jax.ShapeDtypeStruct((batch_size, channels), np.bool_, sharding=sharding)
    if padded:
        batch["lengths"] = jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=sharding)
    return batch


def abstract_batches(
    cfg: Config, shapes: list[tuple[int, int]], frames: dict[int, int], mesh: Mesh
) -> list[dict[str, jax.ShapeDtypeStruct]]:
    """The abstract batch of every `(global batch, samples)` shape of a run (`frames`: frames of each length)."""
    channels = cfg.model.encoder_embed_dim if cfg.masking.mask_channel_prob > 0 else None
    padded = cfg.data.enable_padding  # batches carry their rows' lengths
    return [
        abstract_batch(batch_size, samples, frames[samples], mesh, channels=channels, padded=padded)
        for batch_size, samples in shapes
    ]
