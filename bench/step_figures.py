"""The suite's step figures: both training steps on the benchmark shape, MFU, memory, and compile times by shape.

Part of `python -m bench.suite` (its step and compile parts).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import jax.numpy as jnp

from bench import step_speed
from bench.results import datasheet_peak
from bench.workload import SAMPLE_RATE


def measured_matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of a square matmul in `dtype` on the first device (compiled, after one warm-up)."""
    a = jnp.ones((size, size), dtype)
    b = jnp.ones((size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Both training steps on the benchmark shape; MFU and memory of ours."""
    step_args = step_speed.parse_args(
        [
            *(["--tiny"] if args.tiny else []),
            *("--batch", str(args.batch), "--seconds", str(args.seconds), "--dtype", args.dtype),
            *("--warmup", str(args.warmup), "--repeats", str(args.repeats)),
        ]
    )
    batch = step_speed.batch_for(step_args)
    audio = args.batch * args.seconds
    shape = {"model": f"{args.model} {'tiny' if args.tiny else 'base'}", "batch": args.batch}
    shape |= {"seconds": args.seconds, "dtype": args.dtype}
    ours = step_speed.summarize(step_speed.jax_step(step_args, batch), audio) | shape
    print(f"  spidr_jax step: {ours['median_s'] * 1e3:.1f} ms", flush=True)
    out: dict[str, Any] = {"jax": ours, "audio_s_per_step": audio}
    if "reference" not in args.skip_sides:
        reference = step_speed.summarize(step_speed.reference_step(step_args, batch), audio) | shape
        print(f"  reference step ({reference['torch_compile']}): {reference['median_s'] * 1e3:.1f} ms", flush=True)
        out["reference"] = reference
        out["speedup"] = reference["median_s"] / ours["median_s"]
    kind = jax.devices()[0].device_kind
    measured = measured_matmul_peak(args.dtype)
    out["peak_flops_measured"] = measured
    sheet = datasheet_peak(kind, args.dtype)
    if ours["flops"]:
        per_second = ours["flops"] / ours["median_s"]
        out["flops_per_s"] = per_second
        out["mfu_measured_peak"] = per_second / measured
        if sheet:
            out["peak_flops_datasheet"] = sheet
            out["mfu_datasheet"] = per_second / sheet
    return out


def compile_figures(args: argparse.Namespace, shapes: list[tuple[int, int]]) -> dict[str, Any]:
    """Seconds to compile the step (compile only, not run) for the `args.compile_buckets` longest bucket shapes."""
    from spidr_jax.config import OptimizerConfig
    from spidr_jax.models.extractor import conv_output_lengths
    from spidr_jax.sharding import data_mesh, replicated
    from spidr_jax.train.state import init_model, new_train_state
    from spidr_jax.train.step import StepDefinition, compile_train_step

    cfg = step_speed.jax_model_config(args)
    opt = OptimizerConfig(dtype=args.dtype)
    mesh = data_mesh()
    split, state = new_train_state(init_model(cfg, opt, seed=0), opt, seed=0)
    sharding = replicated(mesh, state)
    step_fn = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    timings = []
    for batch, length in sorted(shapes, key=lambda shape: -shape[1])[: args.compile_buckets]:  # longest first
        frames = int(conv_output_lengths(length, cfg.extractor_conv_layer_config))
        abstract_batch = {
            "waveforms": jax.ShapeDtypeStruct((batch, length), jnp.float32),
            "mask": jax.ShapeDtypeStruct((batch, frames), jnp.bool_),
        }
        start = time.perf_counter()
        step_fn.lower(abstract_state, abstract_batch, extractor_frozen=False).compile()
        timings.append({"batch": batch, "samples": length, "compile_s": time.perf_counter() - start})
        print(f"  compiled {batch} x {length / SAMPLE_RATE:g} s in {timings[-1]['compile_s']:.1f} s", flush=True)
    return {"per_shape": timings}
