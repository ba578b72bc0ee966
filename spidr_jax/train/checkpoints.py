"""Checkpoints of a training run under `<workdir>/checkpoints`: the train state and where the data stands.

The layout (a "model" item that inference restores alone, a "training" item, a "meta" item with the step, the
data seed and checksums) is `spidr_jax.storage`'s. Batches are a pure function of (seed, step), so the step is
the data position: a restarted run resumes exactly where it stopped. Saves are asynchronous; every process takes
part (multi-host). A restore verifies what it reads and falls back to the newest intact checkpoint; a training
run sets damaged ones aside rather than letting `keep_latest` rotate the good ones out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging as absl_logging
from jax.experimental import multihost_utils

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import OptimizerConfig
from spidr_jax.errors import UserError
from spidr_jax.models import DinoSR, build_model
from spidr_jax.storage import checkpoint_items as formats
from spidr_jax.storage.orbax_noise import one_line_reason, quiet_closed_loop_tracebacks
from spidr_jax.train.loss_scale import init_loss_scale
from spidr_jax.train.optimizer import adamw
from spidr_jax.train.state import COMPUTE_DTYPES, ModelSplit, TrainState, split_model

CHECKPOINT_DIR = formats.CHECKPOINT_DIR


class CheckpointSaveError(UserError, RuntimeError):
    """An asynchronous checkpoint save failed (disk full, permissions, storage errors)."""


def warn(message: str) -> None:
    """One warning line on stderr (process 0 only)."""
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr)


class RunCheckpoints:
    """Save/restore train states of one run; keeps the `keep_latest` newest (all when <= 0)."""

    def __init__(self, workdir: str | Path, *, keep_latest: int = -1, read_only: bool = False) -> None:
        self.workdir = Path(workdir).resolve()
        self.directory = self.workdir / CHECKPOINT_DIR
        self.read_only = read_only
        self.manager = formats.checkpoint_manager(self.workdir, keep_latest=keep_latest, read_only=read_only)
        if not read_only:
            # A failed background save is logged by Orbax with tracebacks from each of its threads, then
            # re-raised to us: the run reports it in one line instead.
            absl_logging.set_verbosity(absl_logging.FATAL)

    def latest_step(self) -> int | None:
        """Newest saved step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any]) -> None:
        """Start saving `state` at its step (asynchronously); returns once the arrays are copied off-device."""
        self.check_for_errors()  # a failed earlier save is reported now, not at the end of the run
        step = int(jax.device_get(state.step))
        model, training = split_state(state)
        try:
            formats.save_checkpoint(self.manager, step, model, training, meta)
        except Exception as error:  # Orbax re-raises whatever the previous background save raised
            raise self._save_error(error) from error

    def check_for_errors(self) -> None:
        """Raise CheckpointSaveError if a finished asynchronous save failed."""
        try:
            self.manager.check_for_errors()
        except Exception as error:  # Orbax re-raises whatever the background save raised
            raise self._save_error(error) from error

    def _save_error(self, error: BaseException) -> CheckpointSaveError:
        quiet_closed_loop_tracebacks()  # the run stops on this error, reported in one line
        return CheckpointSaveError(
            f"saving a checkpoint in {self.directory} failed: {one_line_reason(error)} "
            f"(the newest complete checkpoint is step {self.manager.latest_step()})"
        )

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """(state, meta) at `step`, else of the newest intact checkpoint; `abstract_state` gives shapes and shardings.

        Damaged checkpoints are reported in one line each; a writable run moves them to `damaged_checkpoints/`.
        """
        model_target, training_target = split_state(abstract_state)
        damaged: list[int] = []

        def skip(error: formats.DamagedCheckpointError) -> None:
            damaged.append(error.step)
            warn(f"{error}; trying an older checkpoint")

        targets = lambda _step: (model_target, training_target)  # noqa: E731 - the same shapes for every step
        restored = formats.restore_newest_intact(self.manager, targets, step=step, on_damaged=skip)
        if damaged:
            warn(f"resuming from the newest intact checkpoint, step {restored.step}")
            if not self.read_only:
                self._set_aside(damaged)
        return join_state(restored.model, restored.training), restored.meta

    def _set_aside(self, steps: list[int]) -> None:
        # Every process has found the same damage; one moves the directories, then all re-read the list.
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("spidr_jax: damaged checkpoints found")
        if jax.process_index() == 0:
            for step in steps:
                warn(f"the damaged checkpoint of step {step} is kept in {formats.set_aside(self.workdir, step)}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("spidr_jax: damaged checkpoints set aside")
        self.manager.reload()

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release resources (idempotent); a failed save raises CheckpointSaveError."""
        if self.manager is not None:
            manager, self.manager = self.manager, None
            try:
                manager.wait_until_finished()
                manager.check_for_errors()
            except Exception as error:
                raise self._save_error(error) from error
            finally:
                manager.close()


def split_state(state: TrainState) -> tuple[dict, dict]:
    """The checkpoint items of a train state: (model, training)."""
    model = {"params": state.params, "teacher": state.teacher, "codebooks": state.codebooks, "step": state.step}
    training = {"opt_state": state.opt_state, "rng": state.rng, "loss_scale": state.loss_scale}
    return model, training


def join_state(model: dict, training: dict) -> TrainState:
    """The train state of restored checkpoint items."""
    return TrainState(**model, **training)


def abstract_like(state: TrainState, shardings: Any) -> TrainState:  # noqa: ANN401
    """ShapeDtypeStructs of `state` placed with `shardings` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def abstract_train_state(
    model_cfg: DinoSRConfig, opt_cfg: OptimizerConfig, sharding: jax.sharding.Sharding
) -> TrainState:
    """Shapes of a run's train state (nothing initialized), every leaf with `sharding`."""
    from flax import nnx  # noqa: PLC0415

    model = nnx.eval_shape(lambda: build_model(model_cfg, dtype=COMPUTE_DTYPES[opt_cfg.dtype]))
    return abstract_model_state(model, opt_cfg, sharding)[1]


def abstract_model_state(
    model: DinoSR, opt_cfg: OptimizerConfig, sharding: jax.sharding.Sharding
) -> tuple[ModelSplit, TrainState]:
    """(split, shapes of the train state) of an abstract model (`nnx.eval_shape`), every leaf with `sharding`."""
    split, params, teacher, codebooks = split_model(model)
    state = TrainState(
        params=params,
        teacher=teacher,
        codebooks=codebooks,
        opt_state=jax.eval_shape(adamw(opt_cfg).init, params),
        step=jax.ShapeDtypeStruct((), jnp.int32),
        rng=jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
        loss_scale=jax.eval_shape(lambda: init_loss_scale(enabled=True)),
    )
    return split, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def model_tree(state: TrainState) -> dict:
    """The model's full state (as a converted directory stores it) from a train state, as numpy arrays."""
    return formats.model_item_to_tree(split_state(state)[0])
