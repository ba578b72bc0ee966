"""Orbax checkpoints of a training run: the train state and where the data stands, under `<workdir>/checkpoints`.

Each saved step holds two items: "state" (the whole TrainState, sharded arrays) and "meta" (JSON: step, data seed,
run config). Batches are a pure function of (seed, step), so the step is the data position: a restarted run
resumes exactly where it stopped. Saves are asynchronous; every process takes part (multi-host).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from spidr_jax.train.state import TrainState

CHECKPOINT_DIR = "checkpoints"


class RunCheckpoints:
    """Save/restore train states of one run; keeps the `keep_latest` newest (all when <= 0)."""

    def __init__(self, workdir: str | Path, *, keep_latest: int = -1, read_only: bool = False) -> None:
        self.directory = Path(workdir).resolve() / CHECKPOINT_DIR
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
        """Finish pending saves and release resources."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: TrainState, shardings: Any) -> TrainState:  # noqa: ANN401
    """ShapeDtypeStructs of `state` placed with `shardings` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
