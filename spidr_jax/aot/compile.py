"""The real training step, compiled for a target that is not attached: per batch shape and training phase.

`TargetStep` builds what `spidr_jax.train` builds at its start, over the target's devices instead of the local
ones: the 'data' mesh over every chip of every host and slice (`spidr_jax.sharding.data_mesh`), the model with the
target platform's layer loop, remat and attention kernel (`spidr_jax.train.initial_state.configure_execution`), the
train state's shapes, replicated (`spidr_jax.train.checkpoints.abstract_model_state`), and the step itself
(`spidr_jax.train.step.compile_train_step`), lowered for each abstract batch (`spidr_jax.train.workdir`). Nothing
is initialized: only shapes travel.

Lowering (tracing) runs in turn; the compilations run at once in threads, as the trainer compiles its shapes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spidr_jax.aot.shapes import BatchShape
from spidr_jax.aot.targets import Target
from spidr_jax.aot.topology import target_devices
from spidr_jax.config.run import Config
from spidr_jax.models import build_model
from spidr_jax.sharding import data_mesh, replicated
from spidr_jax.train.checkpoints import abstract_model_state
from spidr_jax.train.initial_state import configure_execution
from spidr_jax.train.state import COMPUTE_DTYPES, ModelSplit, TrainState
from spidr_jax.train.step import StepDefinition, compile_train_step
from spidr_jax.train.workdir import abstract_batches

# Deviceless GPU compilation cannot autotune: XLA's Triton GEMM emitter then fails to pick tile sizes for some
# matrix products ("Couldn't find output tile sizes"), so matrix products go to cuBLAS, as XLA does for the
# shapes Triton does not take. Per compilation, so TPU targets in the same process are untouched.
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}
OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|[Oo]ut of memory|exceeds available")


@dataclass(frozen=True)
class Phase:
    """A training phase: before `model.freeze_step` the extractor trains, from it on it is frozen."""

    extractor_frozen: bool

    @property
    def name(self) -> str:
        """The phase's name: "training" (the extractor trains) or "frozen"."""
        return "frozen" if self.extractor_frozen else "training"


def run_phases(cfg: Config) -> list[Phase]:
    """The phases a run from step 0 to `optimizer.max_steps` goes through (each compiles its own step)."""
    phases = []
    if cfg.model.freeze_step > 0:
        phases.append(Phase(extractor_frozen=False))
    if cfg.model.freeze_step < cfg.optimizer.max_steps:
        phases.append(Phase(extractor_frozen=True))
    return phases


@dataclass
class Compilation:
    """One (shape, phase) compiled for a target: the executable, or the compiler's refusal for lack of memory."""

    shape: BatchShape
    phase: Phase
    lowered: jax.stages.Lowered
    seconds: float = 0.0
    compiled: jax.stages.Compiled | None = None
    out_of_memory: str = ""  # the compiler's message when it refused the plan (TPU)


class TargetStep:
    """The training step of `cfg` over the devices of `target`, ready to lower for each batch shape."""

    def __init__(self, cfg: Config, target: Target) -> None:
        self.cfg, self.target = cfg, target
        self.mesh: Mesh = data_mesh(target_devices(target))
        self.state, self.step_fn = step_for_mesh(cfg, self.mesh, target.platform)

    def lower(self, shape: BatchShape, phase: Phase) -> jax.stages.Lowered:
        """The step lowered for one shape (rows of every device) and phase."""
        shapes, frames = [(shape.global_batch, shape.samples)], {shape.samples: shape.frames}
        (batch,) = abstract_batches(self.cfg, shapes, frames, self.mesh)
        return self.step_fn.lower(self.state, batch, extractor_frozen=phase.extractor_frozen)

    def compile_all(
        self,
        shapes: Sequence[BatchShape],
        phases: Sequence[Phase],
        *,
        on_compiled: Callable[[Compilation], None] = lambda _: None,
        max_threads: int | None = None,
    ) -> list[Compilation]:
        """Compile every (shape, phase), concurrently; a plan the compiler refuses for memory is kept as such."""
        jobs = [Compilation(shape, phase, self.lower(shape, phase)) for shape in shapes for phase in phases]
        options = GPU_COMPILER_OPTIONS if self.target.platform == "gpu" else None
        threads = min(len(jobs), max_threads or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aot-compile") as pool:
            futures = {pool.submit(_compile, job, options): job for job in jobs}
            for future in as_completed(futures):
                future.result()
                on_compiled(futures[future])
        return jobs


def _compile(job: Compilation, options: dict | None) -> None:
    start = time.perf_counter()
    try:
        job.compiled = job.lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as error:
        if not OUT_OF_MEMORY.search(str(error)):
            raise
        job.out_of_memory = str(error)
    job.seconds = time.perf_counter() - start


def step_for_mesh(cfg: Config, mesh: Mesh, platform: str, *, scan: bool | None = None) -> tuple[TrainState, object]:
    """(abstract train state on `mesh`, the jitted step) as the trainer builds them for `platform`'s devices.

    `scan` overrides how the layers run (None: `run.layer_loop` on `platform`); the attention kernel falls back
    to XLA's where the platform has no cuDNN (the FLOP count on CPUs).
    """
    dtype = COMPUTE_DTYPES[cfg.optimizer.dtype]
    model = nnx.eval_shape(lambda: build_model(cfg.model, dtype=dtype))
    if platform == "cpu" and cfg.run.attention == "cudnn":  # counting FLOPs: the same attention, computed by XLA
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, attention="xla"))
    configure_execution(model, cfg, platform)
    if scan is not None:
        from spidr_jax.models.layer_stack import LayerExecution  # noqa: PLC0415

        model.set_layer_execution(LayerExecution(scan=scan, remat=cfg.run.remat))
    split, state = abstract_model_state(model, cfg.optimizer, NamedSharding(mesh, PartitionSpec()))
    split = with_concrete_counter(split)
    definition = StepDefinition(split, cfg.model, cfg.optimizer, mesh)
    return state, compile_train_step(definition, replicated(mesh, state))


def with_concrete_counter(split: ModelSplit) -> ModelSplit:
    """The split of an abstract model with its step counter as a value (the step closes over it, never reads it)."""
    counter = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), split.counter)
    return ModelSplit(split.graphdef, counter)
