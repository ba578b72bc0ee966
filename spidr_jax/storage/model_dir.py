"""Converted model directories: `config.json` (the reference's layout) and `state/` (an Orbax pytree).

Written atomically (built in a temporary sibling, renamed at the end); read whole, or without the teacher for
inference. A training workdir is told apart by its `checkpoints/` folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from spidr_jax.storage.atomic import remove_tree
from spidr_jax.storage.checkpoint_items import CHECKPOINT_DIR

FORMAT = "spidr_jax.pretrained/1"
CONFIG_FILE = "config.json"
STATE_DIR = "state"


def write_model_dir(output_dir: Path, model_type: str, model_fields: dict, tree: dict) -> None:
    """Write a converted model directory atomically: built in a temporary sibling, renamed at the end."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        # Closing the checkpointer waits for its writer threads, so none writes into `tmp` after it is removed.
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / STATE_DIR, tree)
            checkpointer.wait_until_finished()
        config = {"format": FORMAT, "run": {"model_type": model_type}, "model": model_fields}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tmp.rename(output_dir)
    except BaseException:
        remove_tree(tmp)
        raise


def read_model_dir_state(path: Path, *, teacher: bool = True) -> dict:
    """The raw Orbax tree of a converted directory's `state/`; without the teacher unless `teacher`.

    Orbax's errors propagate.
    """
    directory = (path / STATE_DIR).resolve()  # Orbax wants absolute paths
    if teacher:
        return ocp.StandardCheckpointer().restore(directory)
    handler = ocp.PyTreeCheckpointHandler()
    target = {key: value for key, value in handler.metadata(directory).tree.items() if key != "teacher"}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    with ocp.Checkpointer(handler) as checkpointer:
        return checkpointer.restore(directory, args=args)


def is_training_workdir(path: str | Path) -> bool:
    """Whether `path` is a training run's workdir (rather than a converted model directory)."""
    return (Path(path) / CHECKPOINT_DIR).is_dir() and not (Path(path) / STATE_DIR).is_dir()
