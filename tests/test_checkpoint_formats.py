"""Checkpoints in the layout written before the model/training split (one "state" item) keep loading.

The older layout is written here as that code wrote it: an Orbax CheckpointManager with the items "state" (the
whole TrainState, StandardSave) and "meta" (JSON). Inference reads its model part, and training resumes from it
exactly as from a checkpoint of today's layout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from spidr_jax.config.loading import config_from_json
from spidr_jax.pretrained import read_pretrained, read_workdir
from spidr_jax.train.checkpoints import RunCheckpoints, abstract_train_state
from tests.run_outputs import leaves
from tests.tone_corpus import write_tone_corpus

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "--config.data.num_static_shapes=1",
    "--config.data.min_sample_size=8000",
    "--config.data.max_sample_size=16000",
    "--config.data.max_batch_length=64000",
    "--config.run.log_interval=1",
]


def train(manifest: Path, workdir: Path, max_steps: int, env: dict) -> None:
    args = [sys.executable, "-m", "spidr_jax.train", f"--config={ROOT / 'configs' / 'tiny.py'}",
            f"--config.data.manifest={manifest}", f"--config.run.workdir={workdir}", *OVERRIDES,
            f"--config.optimizer.max_steps={max_steps}"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def write_single_item_checkpoint(source: Path, target: Path, step: int) -> None:
    """`target` holds `source`'s checkpoint at `step` in the single-item layout, and its config."""
    cfg = config_from_json(source / "config.json")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpoints = RunCheckpoints(source, read_only=True)
    state, meta = checkpoints.restore(abstract_train_state(cfg.model, cfg.optimizer, sharding), step)
    checkpoints.close()
    target.mkdir()
    shutil.copy(source / "config.json", target / "config.json")
    manager = ocp.CheckpointManager(target / "checkpoints", item_names=("state", "meta"))
    meta = {key: meta[key] for key in ("step", "data_seed")}  # what that layout's meta held
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()
    manager.close()


def test_single_item_checkpoints_load_and_resume(tmp_path, cache):
    env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    (tmp_path / "audio").mkdir()
    manifest = tmp_path / "audio" / "train.csv"
    manifest.write_text("\n".join(write_tone_corpus(tmp_path / "audio")) + "\n")
    today = tmp_path / "today"
    train(manifest, today, 2, env)
    older = tmp_path / "older"
    write_single_item_checkpoint(today, older, 2)
    assert sorted(p.name for p in (older / "checkpoints" / "2").iterdir() if p.is_dir()) == ["meta", "state"]
    assert json.loads((older / "checkpoints" / "2" / "meta" / "metadata").read_text()) == {"step": 2, "data_seed": 0}

    # Inference reads the model part alone; the same arrays as today's layout.
    _, tree_today, _ = read_workdir(today)
    _, tree_older, step = read_workdir(older)
    assert step == 2
    for a, b in zip(leaves(tree_today), leaves(tree_older), strict=True):
        np.testing.assert_array_equal(a, b)
    _, older_without_teacher, _ = read_workdir(older, teacher=False)  # what extraction reads
    assert sorted(older_without_teacher) == sorted(key for key in tree_older if key != "teacher")
    without = {key: value for key, value in tree_older.items() if key != "teacher"}
    for a, b in zip(leaves(without), leaves(older_without_teacher), strict=True):
        np.testing.assert_array_equal(a, b)

    # Training resumes from it (optimizer state included) exactly as from today's layout.
    train(manifest, today, 4, env)
    train(manifest, older, 4, env)
    assert (older / "checkpoints" / "4" / "model").is_dir()  # new saves use today's layout
    _, final_today = read_pretrained(today)
    _, final_older = read_pretrained(older)
    for a, b in zip(leaves(final_today), leaves(final_older), strict=True):
        np.testing.assert_array_equal(a, b)
