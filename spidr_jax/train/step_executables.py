"""The training step's executables, one per batch shape, compiled before the loop and concurrently.

The data has up to `data.num_static_shapes` batch shapes. Tracing and lowering them is quick and runs in turn;
XLA's compilations run in threads at once (they release the GIL). The executables are kept and called directly,
so the loop never compiles a shape it compiled ahead (and needs no persistent cache for that).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import jax

from spidr_jax.train.state import TrainState
from spidr_jax.train.step import Batch, Metrics

ShapeKey = tuple


def shape_key(batch: dict, extractor_frozen: bool) -> ShapeKey:
    """What selects an executable: the batch's array shapes and dtypes, and the training phase."""
    arrays = tuple((name, tuple(array.shape), str(array.dtype)) for name, array in sorted(batch.items()))
    return (arrays, extractor_frozen)


class StepExecutables:
    """Callable like the jitted step; runs the executable compiled ahead for the batch's shape when there is one."""

    def __init__(self, step_fn: Callable[..., tuple[TrainState, Metrics]]) -> None:
        self.step_fn = step_fn  # the jitted step, with `.lower`
        self.executables: dict[ShapeKey, jax.stages.Compiled] = {}

    def compile(
        self,
        state: TrainState,
        batches: Sequence[dict[str, jax.ShapeDtypeStruct]],
        *,
        extractor_frozen: bool,
        on_compiled: Callable[[], None] = lambda: None,
        max_threads: int | None = None,
    ) -> None:
        """Compile the step for every batch of `batches` (abstract shapes with their shardings)."""
        lowered = {}
        for batch in batches:
            key = shape_key(batch, extractor_frozen)
            if key not in self.executables and key not in lowered:
                lowered[key] = self.step_fn.lower(state, batch, extractor_frozen=extractor_frozen)
        if not lowered:
            return
        threads = min(len(lowered), max_threads or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="compile") as pool:
            futures = {pool.submit(program.compile): key for key, program in lowered.items()}
            for future in as_completed(futures):
                self.executables[futures[future]] = future.result()
                on_compiled()

    def __call__(self, state: TrainState, batch: Batch, *, extractor_frozen: bool) -> tuple[TrainState, Metrics]:
        """One step: (new state, metrics)."""
        executable = self.executables.get(shape_key(batch, extractor_frozen))
        if executable is None:  # a shape not compiled ahead (e.g. after freeze_step): jit compiles it
            return self.step_fn(state, batch, extractor_frozen=extractor_frozen)
        return executable(state, batch)
