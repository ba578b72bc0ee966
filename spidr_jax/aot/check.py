"""`check(cfg, target)`: compile a config's training step for a target and return one record per shape and phase.

    import spidr_jax.aot
    from spidr_jax.config.cli import parse_config
    records = spidr_jax.aot.check(parse_config(["--config=configs/base.py"]), "v5p-128")
    [(r.shape["samples"], r.phase, r.fits, r.bound["step_seconds"]) for r in records]

Nothing runs on this machine's accelerator: the step is compiled for the target's devices (described by libtpu or
JAX's CUDA plugin) and its FLOPs counted on the CPU. Call it before this process uses JAX's devices, so that JAX
starts only its CPU backend here.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import jax

from spidr_jax.aot.compile import Compilation, TargetStep, run_phases
from spidr_jax.aot.costs import FlopCounter, step_costs
from spidr_jax.aot.report import AotRecord, over_budget_line, refusal_bytes, shape_fields, sources
from spidr_jax.aot.shapes import largest_shape, step_shapes
from spidr_jax.aot.targets import Target, parse_target
from spidr_jax.config.run import Config
from spidr_jax.progress import make_progress


def use_cpu_only() -> None:
    """Let JAX start only its CPU backend in this process (no effect once its backends have started)."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    jax.config.update("jax_platforms", "cpu")


def check(
    cfg: Config,
    target: str | Target,
    *,
    slices: int = 1,
    quick: bool = False,
    progress: bool = False,
    flop_counter: FlopCounter | None = None,
    hlo_dir: str | Path | None = None,
) -> list[AotRecord]:
    """Compile the training step of `cfg` for `target` ("v5p-128" or a `Target`): one record per shape and phase.

    Every batch shape of the run and every phase it reaches (`quick`: only the shape with the most samples per
    device), in shape order. Raises `UnknownTargetError` (a bad name) or `CompilerUnavailableError` (no libtpu
    or CUDA plugin). A shape that does not fit is a record with `fits=False` and its `message`, not an error.
    `hlo_dir`: write each compiled program's optimized HLO there (`<target>_<rows>x<samples>_<phase>.hlo.txt`).
    """
    use_cpu_only()
    if isinstance(target, str):
        target = parse_target(target, slices=slices)
    flop_counter = flop_counter or FlopCounter(cfg)
    shapes, _ = step_shapes(cfg, target.num_devices, progress=progress)
    if quick:
        shapes = [largest_shape(shapes)]
    phases = run_phases(cfg)
    with make_progress(disable=not progress) as bar:
        task = bar.add_task(f"compiling for {target.label}", total=2 * len(shapes) * len(phases), status="")
        step = TargetStep(cfg, target)
        jobs = step.compile_all(shapes, phases, on_compiled=lambda _: bar.advance(task))
        records = []
        for job in jobs:
            records.append(make_record(job, target, flop_counter))
            if hlo_dir is not None and job.compiled is not None:
                write_hlo(Path(hlo_dir), target, job)
            bar.advance(task)
    return records  # in the order of the jobs: shapes ascending, each in its phases' order


def write_hlo(directory: Path, target: Target, job: Compilation) -> Path:
    """Write a compiled program's HLO text (through a temporary name)."""
    assert job.compiled is not None
    directory.mkdir(parents=True, exist_ok=True)
    slices = f"x{target.num_slices}" if target.num_slices > 1 else ""
    name = f"{target.name}{slices}_{job.shape.batch_per_device}x{job.shape.samples}_{job.phase.name}.hlo.txt"
    path = directory / name
    partial = path.with_suffix(".tmp")
    partial.write_text(job.compiled.as_text(), encoding="utf-8")
    partial.replace(path)
    return path


def make_record(job: Compilation, target: Target, flop_counter: FlopCounter) -> AotRecord:
    """The record of one compilation (or of the compiler's refusal)."""
    shape, usable = job.shape, target.chip.usable_memory()
    record = AotRecord(
        target=target.label,
        platform=target.platform,
        devices=target.num_devices,
        hosts=target.num_hosts,
        slices=target.num_slices,
        shape=shape_fields(shape.batch_per_device, shape.samples, shape.frames, shape.global_batch),
        phase=job.phase.name,
        fits=job.compiled is not None,
        compile_seconds=round(job.seconds, 2),
        memory={},
        sources=sources(),
    )
    run_fields = {"remat": flop_counter.cfg.run.remat, "layer_loop": flop_counter.cfg.run.layer_loop}
    if job.compiled is None:  # the TPU compiler refused the plan
        needed, available = refusal_bytes(job.out_of_memory) or (0, usable)
        record.memory = {"total": needed, "available": available, "headroom_percent": 100 * (1 - needed / available)}
        record.message = over_budget_line(record, run_fields)
        return record
    costs = step_costs(job, target, flop_counter, usable)
    memory = costs.memory
    record.memory = {**asdict(memory), "total": memory.total, "headroom_percent": round(100 * memory.headroom, 1)}
    record.fits = memory.total <= memory.available  # the GPU compiler does not refuse: compare here
    record.flops = costs.flops
    record.bytes_accessed = costs.kernels.bytes
    launches = costs.kernels.launches
    record.kernels = {**launches, "total": sum(launches.values())}
    record.float32_products = sum(k.launches for k in costs.kernels.kernels if k.float32_product)
    bound = costs.bound
    record.bound = {
        "step_seconds": bound.seconds,
        "limited_by": bound.limited_by,
        "audio_seconds_per_second_per_device": bound.audio_seconds_per_second,
        "peak_flops": target.peak_flops(flop_counter.cfg.optimizer.dtype),
        "bandwidth": target.chip.bandwidth,
    }
    if not record.fits:
        record.message = over_budget_line(record, run_fields)
    return record
