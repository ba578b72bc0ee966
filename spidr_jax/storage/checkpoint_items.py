"""A training run's checkpoints under `<workdir>/checkpoints/<step>/`: saving, restoring and verifying the items.

The layout (items `model`, `training`, `meta`, and the older single item `state`) is described in
`spidr_jax.storage`. A restore verifies checksums and finiteness: a damaged checkpoint raises
`DamagedCheckpointError`, which names the step and the file, and callers fall back to an older one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from spidr_jax.errors import UserError
from spidr_jax.storage.checksums import checksum_mismatch, first_non_finite, tree_checksums
from spidr_jax.storage.orbax_noise import one_line_reason, quiet_absl, stderr_kept_on_success
from spidr_jax.storage.restore_errors import CheckpointUnreadableError, is_damage

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"  # damaged checkpoints are moved here, out of reach of keep_latest
MODEL_ITEM, TRAINING_ITEM, META_ITEM = "model", "training", "meta"
LEGACY_STATE_ITEM = "state"
MODEL_KEYS = ("params", "teacher", "codebooks", "step")
TRAINING_KEYS = ("opt_state", "rng", "loss_scale")


class DamagedCheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: unreadable, altered since it was written, or holding NaN/inf."""

    def __init__(self, step: int, where: Path, reason: str) -> None:
        super().__init__(f"checkpoint at step {step} is damaged: {where}: {reason}")
        self.step = step


def checkpoint_manager(workdir: Path, *, keep_latest: int = -1, read_only: bool = False) -> ocp.CheckpointManager:
    """The Orbax manager of `<workdir>/checkpoints`, reading both layouts; keeps the `keep_latest` newest."""
    with quiet_absl(read_only):  # Orbax warns that a read-only manager will not save
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest if keep_latest > 0 else None,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=not read_only,
        )
        handlers = {
            MODEL_ITEM: ocp.PyTreeCheckpointHandler(),
            TRAINING_ITEM: ocp.PyTreeCheckpointHandler(),
            LEGACY_STATE_ITEM: ocp.PyTreeCheckpointHandler(),
            META_ITEM: ocp.JsonCheckpointHandler(),
        }
        # Orbax refuses relative paths.
        return ocp.CheckpointManager(workdir.resolve() / CHECKPOINT_DIR, options=options, item_handlers=handlers)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, model: dict, training: dict, meta: dict) -> None:
    """Start an asynchronous save of both items, with their checksums in the meta item."""
    meta = {**meta, "checksums": {MODEL_ITEM: tree_checksums(model), TRAINING_ITEM: tree_checksums(training)}}
    args = ocp.args.Composite(
        model=ocp.args.PyTreeSave(model), training=ocp.args.PyTreeSave(training), meta=ocp.args.JsonSave(meta)
    )
    manager.save(step, args=args, force=True)


@dataclass(frozen=True)
class Restored:
    """What a checkpoint held: the model item, the training item (None when not asked for), the meta item."""

    step: int
    model: dict
    training: dict | None
    meta: dict


def _restore_args(target: dict, *, partial: bool = False) -> ocp.args.PyTreeRestore:
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    return ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=partial)


def restore_checkpoint(
    manager: ocp.CheckpointManager, step: int, model_target: dict, training_target: dict | None
) -> Restored:
    """Restore and verify one step; `*_target` give shapes, dtypes and shardings (ShapeDtypeStructs).

    Raises DamagedCheckpointError naming the step and what is wrong, or CheckpointUnreadableError when the restore
    failed for another reason (see `restore_errors`).
    """
    directory = manager.directory / str(step)
    legacy = (directory / LEGACY_STATE_ITEM).is_dir() and not (directory / MODEL_ITEM).is_dir()
    try:
        with stderr_kept_on_success():
            if legacy:
                target = {**model_target, **(training_target or {})}
                args = ocp.args.Composite(state=_restore_args(target, partial=True), meta=ocp.args.JsonRestore())
                restored = manager.restore(step, args=args)
                state, meta = dict(restored.state), dict(restored.meta)
                model = {key: state[key] for key in model_target}
                training = {key: state[key] for key in TRAINING_KEYS} if training_target is not None else None
            else:
                partial = set(model_target) != set(MODEL_KEYS)
                items = {MODEL_ITEM: _restore_args(model_target, partial=partial), META_ITEM: ocp.args.JsonRestore()}
                if training_target is not None:
                    items[TRAINING_ITEM] = _restore_args(training_target)
                restored = manager.restore(step, args=ocp.args.Composite(**items))
                model, meta = dict(restored.model), dict(restored.meta)
                training = dict(restored.training) if training_target is not None else None
    except Exception as error:  # Orbax, tensorstore and JSON raise many kinds for damaged files
        raise restore_failure(step, directory, error) from error
    _verify(step, directory, MODEL_ITEM, model, meta)
    if training is not None:
        _verify(step, directory, TRAINING_ITEM, training, meta)
    return Restored(step=step, model=model, training=training, meta=meta)


def restore_failure(step: int, where: Path, error: Exception) -> DamagedCheckpointError | CheckpointUnreadableError:
    """What a failed read of a checkpoint means: its damage, or another failure that leaves it as it is."""
    if is_damage(error):
        return DamagedCheckpointError(step, where, one_line_reason(error))
    return CheckpointUnreadableError(
        f"cannot read the checkpoint at step {step}: {where}: {one_line_reason(error)} "
        "(not a sign of damage: nothing was set aside; fix the cause, or retry)"
    )


def _verify(step: int, directory: Path, item: str, tree: dict, meta: dict) -> None:
    expected = meta.get("checksums", {}).get(item)
    if expected is not None:  # older checkpoints have none
        path = checksum_mismatch(tree, expected)
        if path is not None:
            raise DamagedCheckpointError(step, directory / item, f"array {path} differs from what was saved")
    path = first_non_finite(tree)
    if path is not None:
        raise DamagedCheckpointError(step, directory / item, f"array {path} holds NaN or infinite values")


def restore_newest_intact(
    manager: ocp.CheckpointManager,
    targets: Callable[[int], tuple[dict, dict | None]],
    *,
    step: int | None = None,
    on_damaged: Callable[[DamagedCheckpointError], None],
) -> Restored:
    """The newest checkpoint that restores intact (or exactly `step`); `on_damaged` hears of each one skipped.

    `targets(step)` gives the (model, training) restore targets of a step. Raises FileNotFoundError when there is
    no checkpoint (or none at `step`), DamagedCheckpointError when none is intact (or `step` is damaged).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"{manager.directory}: no checkpoint")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{manager.directory}: no checkpoint at step {step} (have {sorted(steps)})")
    last: DamagedCheckpointError | None = None
    for candidate in [step] if step is not None else steps:
        try:
            return restore_checkpoint(manager, candidate, *targets(candidate))
        except DamagedCheckpointError as error:
            if step is not None:
                raise
            on_damaged(error)
            last = error
    raise DamagedCheckpointError(steps[-1], manager.directory, f"none of {sorted(steps)} is intact") from last


def set_aside(workdir: Path, step: int) -> Path:
    """Move a damaged checkpoint to `<workdir>/damaged_checkpoints/` (kept for inspection, never rotated away)."""
    source = workdir / CHECKPOINT_DIR / str(step)
    target_dir = workdir / DAMAGED_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    source.rename(target)
    return target


def metadata_target(manager: ocp.CheckpointManager, step: int, keys: tuple[str, ...]) -> dict:
    """ShapeDtypeStructs on the first local device for `keys` of a step's model item (or old single item)."""
    directory = manager.directory / str(step)
    item = MODEL_ITEM if (directory / MODEL_ITEM).is_dir() else LEGACY_STATE_ITEM
    try:
        tree = ocp.PyTreeCheckpointHandler().metadata(directory / item).tree  # this item's alone
    except Exception as error:  # as in restore_checkpoint
        raise restore_failure(step, directory / item, error) from error
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), {key: tree[key] for key in keys}
    )


def model_item_to_tree(model: dict) -> dict:
    """A model item as the model's state tree (the layout of a converted directory), in numpy arrays."""
    tree = {**model["params"], "codebooks": model["codebooks"], "current_step": model["step"]}
    if "teacher" in model:  # left out for inference
        tree["teacher"] = model["teacher"]
    return jax.tree.map(np.asarray, jax.device_get(tree))


def read_workdir_model(workdir: Path, step: int | None = None, *, teacher: bool = True) -> tuple[dict, int]:
    """(model state tree, step) of a training workdir's checkpoint: the newest intact one by default.

    Only the model item is read (no optimizer state; no teacher unless `teacher`), onto this process's first
    device. Damaged checkpoints skipped on the way get a warning line on stderr.
    """
    keys = MODEL_KEYS if teacher else tuple(key for key in MODEL_KEYS if key != "teacher")

    def skip(error: DamagedCheckpointError) -> None:
        print(f"warning: {error}; trying an older checkpoint", file=sys.stderr)

    manager = checkpoint_manager(workdir, read_only=True)
    try:
        targets = lambda candidate: (metadata_target(manager, candidate, keys), None)  # noqa: E731
        restored = restore_newest_intact(manager, targets, step=step, on_damaged=skip)
    finally:
        manager.close()
    return model_item_to_tree(restored.model), restored.step
