"""Where a run's train state comes from: its newest checkpoint, a converted model (`run.init_ckpt`), or a seed."""

from __future__ import annotations

import jax
from jax.sharding import Mesh

from spidr_jax.config.run import Config
from spidr_jax.models import DinoSR
from spidr_jax.models.attention_kernel import attention_kernel
from spidr_jax.models.layer_stack import LayerExecution
from spidr_jax.pretrained import load_pretrained
from spidr_jax.sharding import put_replicated, replicated
from spidr_jax.train.checkpoints import RunCheckpoints, abstract_like
from spidr_jax.train.state import COMPUTE_DTYPES, ModelSplit, TrainState, init_model, new_train_state


def initial_train_state(cfg: Config, mesh: Mesh, checkpoints: RunCheckpoints) -> tuple[ModelSplit, TrainState, str]:
    """(model split, train state on the mesh, where it came from)."""
    seed = cfg.run.random_seed
    resuming = checkpoints.latest_step() is not None
    if cfg.run.init_ckpt and not resuming:
        # As the reference's init_ckpt: weights from the checkpoint, fresh optimizer, step 0.
        model = load_pretrained(cfg.run.init_ckpt, dtype=COMPUTE_DTYPES[cfg.optimizer.dtype])
        if model.config != cfg.model:
            from spidr_jax.config.model import ConfigError  # noqa: PLC0415

            raise ConfigError(f"run.init_ckpt {cfg.run.init_ckpt}: its model config differs from the config's model")
        origin = f"weights from {cfg.run.init_ckpt}"
    else:
        model = init_model(cfg.model, cfg.optimizer, seed)
        origin = "fresh"
    configure_execution(model, cfg, jax.default_backend())
    split, state = new_train_state(model, cfg.optimizer, seed)
    sharding = replicated(mesh, state)
    if resuming:
        state, _ = checkpoints.restore(abstract_like(state, sharding))
        origin = f"resumed from {checkpoints.directory}"
    return split, put_replicated(state, mesh), origin


def configure_execution(model: DinoSR, cfg: Config, platform: str) -> None:
    """How the model runs on `platform` ("cpu", "gpu", "tpu"): `run.layer_loop`, `run.remat`, `run.attention`."""
    model.set_layer_execution(LayerExecution.from_config(cfg.run.layer_loop, cfg.run.remat, platform))
    dtype = COMPUTE_DTYPES[cfg.optimizer.dtype]
    model.set_attention_kernel(attention_kernel(cfg.run.attention, platform, dtype))
