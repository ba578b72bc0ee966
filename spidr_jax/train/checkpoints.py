"""Orbax checkpoints of a training run: the train state and where the data stands, under `<workdir>/checkpoints`.

Each saved step holds two items: "state" (the whole TrainState, sharded arrays) and "meta" (JSON: step, data seed,
run config). Batches are a pure function of (seed, step), so the step is the data position: a restarted run
resumes exactly where it stopped. Saves are asynchronous; every process takes part (multi-host).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from spidr_jax.config.loading import config_from_json
from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import Config, OptimizerConfig
from spidr_jax.pretrained import abstract_model
from spidr_jax.train.loss_scale import init_loss_scale
from spidr_jax.train.optimizer import adamw
from spidr_jax.train.state import COMPUTE_DTYPES, TrainState, split_model

CHECKPOINT_DIR = "checkpoints"


@contextmanager
def quiet_absl(enabled: bool) -> Iterator[None]:
    """Silence absl warnings for the duration (when enabled)."""
    previous = absl_logging.get_verbosity()
    if enabled:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)


class RunCheckpoints:
    """Save/restore train states of one run; keeps the `keep_latest` newest (all when <= 0)."""

    def __init__(self, workdir: str | Path, *, keep_latest: int = -1, read_only: bool = False) -> None:
        self.directory = Path(workdir).resolve() / CHECKPOINT_DIR
        with quiet_absl(read_only):  # Orbax warns that a read-only manager will not save
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep_latest if keep_latest > 0 else None,
                create=not read_only,
                read_only=read_only,
                enable_async_checkpointing=not read_only,
            )
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        """Newest saved step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any]) -> None:
        """Start saving `state` at its step (asynchronously); returns once the arrays are copied off-device."""
        step = int(jax.device_get(state.step))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """(state, meta) at `step` (the latest by default); `abstract_state` gives shapes, dtypes and shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} (have {self.all_steps()})")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored.state, restored.meta

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release resources (idempotent)."""
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None


def abstract_like(state: TrainState, shardings: Any) -> TrainState:  # noqa: ANN401
    """ShapeDtypeStructs of `state` placed with `shardings` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def abstract_train_state(
    model_cfg: DinoSRConfig, opt_cfg: OptimizerConfig, sharding: jax.sharding.Sharding
) -> TrainState:
    """Shapes of a run's train state (nothing initialized), every leaf with `sharding`."""
    model = abstract_model(model_cfg, COMPUTE_DTYPES[opt_cfg.dtype])
    _, params, teacher, codebooks = split_model(model)
    state = TrainState(
        params=params,
        teacher=teacher,
        codebooks=codebooks,
        opt_state=jax.eval_shape(adamw(opt_cfg).init, params),
        step=jax.ShapeDtypeStruct((), jnp.int32),
        rng=jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
        loss_scale=jax.eval_shape(lambda: init_loss_scale(enabled=True)),
    )
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def model_tree(state: TrainState) -> dict:
    """The model's full state (as `spidr_jax.pretrained` stores it) from a train state, as numpy arrays."""
    tree = {**state.params, "teacher": state.teacher, "codebooks": state.codebooks, "current_step": state.step}
    return jax.tree.map(np.asarray, jax.device_get(tree))


def restore_model_tree(workdir: str | Path, step: int | None = None) -> tuple[Config, dict, int]:
    """(run config, model tree, step) of a training run's checkpoint (the newest by default), on one device."""
    workdir = Path(workdir)
    cfg = config_from_json(workdir / "config.json")
    checkpoints = RunCheckpoints(workdir, read_only=True)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = checkpoints.restore(abstract_train_state(cfg.model, cfg.optimizer, sharding), step)
    checkpoints.close()
    return cfg, model_tree(state), int(state.step)
