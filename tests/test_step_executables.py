"""The step's executables compiled ahead, concurrently: the loop runs them, and they compute the jitted step."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from spidr_jax.config import OptimizerConfig, SpidRConfig
from spidr_jax.models import build_model
from spidr_jax.models.extractor import conv_output_lengths
from spidr_jax.sharding import data_mesh, replicated
from spidr_jax.train.state import new_train_state
from spidr_jax.train.step import StepDefinition, compile_train_step
from spidr_jax.train.step_executables import StepExecutables
from spidr_jax.train.workdir import abstract_batch, global_batch
from tests.reference import SMALL

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

SHAPES = [(4, 1000), (2, 1600)]  # (rows, samples); SMALL's extractor: 20 samples per frame


class CountingStep:
    """The jitted step, counting the calls that reach it (the fallback that compiles on first use)."""

    def __init__(self, step_fn):
        self.step_fn, self.calls = step_fn, 0
        self.lower = step_fn.lower

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.step_fn(*args, **kwargs)


def setup():
    cfg = SpidRConfig(**SMALL)
    opt = OptimizerConfig(dtype="float32", warmup_steps=2)
    mesh = data_mesh(jax.devices()[:1])
    split, state = new_train_state(build_model(cfg, seed=0), opt, seed=0)
    sharding = replicated(mesh, state)
    return cfg, mesh, sharding, compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding), state


def batches(cfg, mesh, rows, samples, seed):
    frames = int(conv_output_lengths(samples, cfg.extractor_conv_layer_config))
    rng = np.random.default_rng(seed)
    batch = {
        "waveforms": rng.standard_normal((rows, samples)).astype(np.float32),
        "mask": rng.random((rows, frames)) < 0.5,
    }
    return global_batch(batch, mesh), abstract_batch(rows, samples, frames, mesh, channels=None)


def test_shapes_compiled_ahead_run_without_compiling_and_equal_the_jitted_step():
    cfg, mesh, sharding, step_fn, initial = setup()
    initial = jax.device_get(initial)
    fresh = lambda: jax.device_put(initial, sharding)  # noqa: E731 - new buffers each time (the step donates them)
    counting = CountingStep(step_fn)
    executables = StepExecutables(counting)
    data = [batches(cfg, mesh, rows, samples, seed) for seed, (rows, samples) in enumerate(SHAPES)]
    compiled = []
    executables.compile(
        fresh(),
        [shapes for _, shapes in data],
        extractor_frozen=False,
        on_compiled=lambda: compiled.append(1),
        max_threads=2,
    )
    assert len(compiled) == len(executables.executables) == 2

    state, ours = fresh(), []
    for batch, _ in data + data:
        state, metrics = executables(state, batch, extractor_frozen=False)
        ours.append(float(metrics["loss"]))
    assert counting.calls == 0  # every step ran an executable compiled ahead

    state, expected = fresh(), []
    for batch, _ in data + data:
        state, metrics = step_fn(state, batch, extractor_frozen=False)
        expected.append(float(metrics["loss"]))
    np.testing.assert_array_equal(ours, expected)

    # A shape or phase not compiled ahead goes to the jitted step.
    executables(state, data[0][0], extractor_frozen=True)
    assert counting.calls == 1
