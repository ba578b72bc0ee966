"""What a compiled step costs on its target: memory per device, FLOPs, bytes, kernels, and the roofline bound.

- Memory: the compiler's own plan (`compiled.memory_analysis()`): arguments (the train state and the batch),
  outputs (the new state, aliased onto the donated old one, and the metrics) and temporaries (activations).
- FLOPs: XLA's cost analysis of the same step lowered on a CPU for one device's rows with its layers unrolled
  (`STEP_FLOPS_SOURCE`). Cost analysis, lowered or compiled, counts a loop body once: the scanned layers of the
  compiled step would count one layer of twelve. The unrolled module counts every layer, the rematerialized
  forward passes included; the compiled GPU module could not be used anyway (matrix products and convolutions are
  opaque cuBLAS and cuDNN calls in it).
- Bytes and kernels: the compiled module's kernels walked with their loop trip counts (`spidr_jax.aot.hlo`).
- Bound: `max(FLOPs / peak, bytes / bandwidth)` at the data sheet's peak and bandwidth: no step can be faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from spidr_jax.aot.compile import Compilation, Phase, step_for_mesh
from spidr_jax.aot.hlo import KernelCount
from spidr_jax.aot.shapes import BatchShape
from spidr_jax.aot.targets import Target
from spidr_jax.config.run import Config
from spidr_jax.sharding import data_mesh
from spidr_jax.train.workdir import abstract_batches

STEP_FLOPS_SOURCE = "XLA cost analysis of the step lowered for one device's rows, layers unrolled (all counted)"
BYTES_SOURCE = "operands and results of every kernel in device memory, loop bodies times their trip count"


@dataclass(frozen=True)
class MemoryUse:
    """Bytes per device of a compiled step, and the device memory they must fit in."""

    arguments: int
    outputs: int
    aliased: int  # outputs written over donated arguments (the train state)
    temporaries: int
    available: int

    @property
    def total(self) -> int:
        """Everything live at the step's peak: arguments, outputs not aliased onto them, temporaries."""
        return self.arguments + self.outputs - self.aliased + self.temporaries

    @property
    def headroom(self) -> float:
        """Fraction of the available memory left (negative: it does not fit)."""
        return 1.0 - self.total / self.available

    @classmethod
    def of(cls, compiled: jax.stages.Compiled, available: int) -> MemoryUse:
        """The compiler's memory plan of an executable."""
        stats = compiled.memory_analysis()
        return cls(
            arguments=int(stats.argument_size_in_bytes),
            outputs=int(stats.output_size_in_bytes),
            aliased=int(stats.alias_size_in_bytes),
            temporaries=int(stats.temp_size_in_bytes),
            available=available,
        )


@dataclass(frozen=True)
class Bound:
    """The roofline bound of one step on one device: a lower bound on its time, not a measurement."""

    seconds: float
    limited_by: str  # "compute" or "memory bandwidth"
    audio_seconds_per_second: float  # per device, at that step time


def roofline(flops: float, bytes_moved: float, target: Target, dtype: str, shape: BatchShape) -> Bound:
    """`max(FLOPs / peak, bytes / bandwidth)` for one device of `target` computing in `dtype`."""
    compute = flops / target.peak_flops(dtype)
    memory = bytes_moved / target.chip.bandwidth
    seconds = max(compute, memory)
    limited_by = "compute" if compute >= memory else "memory bandwidth"
    return Bound(seconds, limited_by, shape.audio_seconds_per_device / seconds)


class FlopCounter:
    """FLOPs of one device's share of a step (`STEP_FLOPS_SOURCE`), counted once per shape and phase of a config.

    The count depends on the rows of one device, not on the target: targets of the same per-device shape share it.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.counted: dict[tuple[int, int, int, bool], float] = {}

    def __call__(self, shape: BatchShape, phase: Phase) -> float:
        """FLOPs per device per step."""
        key = (shape.batch_per_device, shape.samples, shape.frames, phase.extractor_frozen)
        if key not in self.counted:
            mesh = data_mesh(jax.devices("cpu")[:1])
            state, step_fn = step_for_mesh(self.cfg, mesh, "cpu", scan=False)
            rows = [(shape.batch_per_device, shape.samples)]
            (batch,) = abstract_batches(self.cfg, rows, {shape.samples: shape.frames}, mesh)
            lowered = step_fn.lower(state, batch, extractor_frozen=phase.extractor_frozen)
            self.counted[key] = float(lowered.cost_analysis()["flops"])
        return self.counted[key]


@dataclass(frozen=True)
class StepCosts:
    """Everything measured of one compiled (shape, phase) on a target."""

    memory: MemoryUse
    flops: float
    kernels: KernelCount
    bound: Bound


def step_costs(job: Compilation, target: Target, flop_counter: FlopCounter, available: int) -> StepCosts:
    """Memory, FLOPs, bytes, kernels and bound of a compiled step."""
    assert job.compiled is not None
    kernels = KernelCount.of(job.compiled.as_text())
    flops = flop_counter(job.shape, job.phase)
    return StepCosts(
        memory=MemoryUse.of(job.compiled, available),
        flops=flops,
        kernels=kernels,
        bound=roofline(flops, kernels.bytes, target, flop_counter.cfg.optimizer.dtype, job.shape),
    )
