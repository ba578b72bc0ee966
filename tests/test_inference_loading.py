"""Inference reads a model without its teacher (half of the weights), and computes what the whole model computes."""

from __future__ import annotations

import numpy as np
import pytest

from spidr_jax.config import Config, RunConfig
from spidr_jax.config.loading import config_to_json
from spidr_jax.models import build_model
from spidr_jax.pretrained import (
    PretrainedFormatError,
    check_tree_fits,
    load_pretrained,
    model_from_tree,
    read_pretrained,
    read_workdir,
)
from spidr_jax.train.checkpoints import RunCheckpoints
from spidr_jax.train.state import new_train_state
from tests.extraction_setup import TINY, tiny_checkpoint
from tests.run_outputs import leaves


def assert_same_tree_but_the_teacher(without: dict, whole: dict) -> None:
    assert "teacher" not in without
    assert sorted(without) == sorted(key for key in whole if key != "teacher")
    for a, b in zip(leaves(without), leaves({k: v for k, v in whole.items() if k != "teacher"}), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_converted_model_read_without_its_teacher_computes_the_same(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    cfg, whole = read_pretrained(checkpoint)
    _, without = read_pretrained(checkpoint, teacher=False)
    assert_same_tree_but_the_teacher(without, whole)

    full, student_only = model_from_tree(cfg, whole), load_pretrained(checkpoint, teacher=False)  # the public API
    # The teacher is filled with the student's arrays: nothing more is stored.
    teacher, student = student_only.teacher.pos_conv_embed, student_only.student.pos_conv_embed
    assert teacher.kernels[0][...] is student.kernels[0][...]
    waveforms = np.random.default_rng(0).standard_normal((2, 6000)).astype(np.float32)
    lengths = np.array([6000, 4500], np.int32)
    for a, b in zip(
        full.get_intermediate_outputs(waveforms, lengths), student_only.get_intermediate_outputs(waveforms, lengths),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(full.units(waveforms, lengths)), student_only.units(waveforms, lengths))


def test_a_training_workdir_read_without_its_teacher(tmp_path):
    workdir = tmp_path / "run"
    cfg = Config(run=RunConfig(model_type="spidr"), model=TINY)
    workdir.mkdir()
    (workdir / "config.json").write_text(config_to_json(cfg))
    _, state = new_train_state(build_model(TINY, seed=3), cfg.optimizer, seed=0)
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(state.replace(step=np.int32(5)), {})
    checkpoints.close()
    _, whole, step = read_workdir(workdir)
    _, without, step_without = read_workdir(workdir, teacher=False)
    assert step == step_without == 5
    assert_same_tree_but_the_teacher(without, whole)


def test_a_missing_student_is_still_named(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    cfg, whole = read_pretrained(checkpoint)
    del whole["student"]
    with pytest.raises(PretrainedFormatError, match="missing: student/"):
        check_tree_fits(whole, cfg, str(checkpoint), teacher=False)
