"""Compile time of the training step, layers scanned against unrolled, each compilation in a fresh process.

    python -m bench.compile_time                              # tiny and base SpidR, 2 x 2 s, float32, 3 runs each
    python -m bench.compile_time --models base --batch 15 --seconds 15 --dtype bfloat16 --runs 2   # on a GPU
    python -m bench.compile_time --json out.jsonl             # also one JSON line per variant
    python -m bench.compile_time --models tiny --layers unroll --shapes 8 --threads 1   # 8 shapes, as training

A fresh process per compilation, with JAX's persistent compilation cache off, so that nothing compiled before is
reused. Each run traces and lowers the step (`lower_s`) and compiles it (`compile_s`); the table gives medians and
the spread (min-max) over the runs. Not a test: numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from bench import module_command
from bench.step_speed import batch_for, jax_model_config


def compile_once(model: str, layers: str, args: argparse.Namespace) -> dict:
    """Lower and compile the step once in this process: seconds of each phase."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # noqa: FBT003
    from spidr_jax.config import OptimizerConfig
    from spidr_jax.models.layer_stack import LayerExecution
    from spidr_jax.sharding import data_mesh, replicated
    from spidr_jax.train.state import init_model, new_train_state
    from spidr_jax.train.step import StepDefinition, compile_train_step
    from spidr_jax.train.workdir import global_batch

    cfg = jax_model_config(argparse.Namespace(model="spidr", tiny=model == "tiny"))
    opt = OptimizerConfig(dtype=args.dtype)
    network = init_model(cfg, opt, seed=0)
    network.set_layer_execution(LayerExecution.from_config(layers, args.remat, jax.default_backend()))
    mesh = data_mesh()
    split, state = new_train_state(network, opt, seed=0)
    sharding = replicated(mesh, state)
    state = jax.device_put(state, sharding)
    step_fn = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    if args.shapes > 1:
        return compile_shapes(step_fn, state, mesh, model, args)
    waveforms, mask = batch_for(argparse.Namespace(tiny=model == "tiny", batch=args.batch, seconds=args.seconds))
    device_batch = global_batch({"waveforms": waveforms, "mask": mask}, mesh)
    start = time.perf_counter()
    lowered = step_fn.lower(state, device_batch, extractor_frozen=False)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
    return {"lower_s": lower_s, "compile_s": compile_s, "device": f"{jax.devices()[0].device_kind}"}


def compile_shapes(step_fn, state, mesh, model: str, args: argparse.Namespace) -> dict:  # noqa: ANN001
    """Compile `args.shapes` batch shapes (lengths 1, 1.1, 1.2, ... x `--seconds`) as training does, in threads."""
    import jax

    from spidr_jax.train.step_executables import StepExecutables
    from spidr_jax.train.workdir import abstract_batch

    batches = []
    for i in range(args.shapes):
        seconds = args.seconds * (1 + 0.1 * i)
        _, mask = batch_for(argparse.Namespace(tiny=model == "tiny", batch=args.batch, seconds=seconds))
        batches.append(abstract_batch(args.batch, int(seconds * 16_000), mask.shape[1], mesh, channels=None))
    start = time.perf_counter()
    StepExecutables(step_fn).compile(state, batches, extractor_frozen=False, max_threads=args.threads)
    return {"lower_s": 0.0, "compile_s": time.perf_counter() - start, "device": jax.devices()[0].device_kind}


def run_in_fresh_process(args: argparse.Namespace, model: str, layers: str) -> dict:
    """One `compile_once` in a child process (its result comes back as the child's last stdout line)."""
    command = module_command("compile_time", "--child", model, layers, "--remat", args.remat, "--batch",
                             str(args.batch), "--seconds", str(args.seconds), "--dtype", args.dtype, "--shapes",
                             str(args.shapes), "--threads", str(args.threads))  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"compile_time: the {model}/{layers} child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """Median and range of `values`, in seconds."""
    return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    """Compile every (model, layers) variant `--runs` times and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.compile_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["tiny", "base"], default=["tiny", "base"])
    parser.add_argument("--layers", nargs="+", choices=["scan", "unroll"], default=["scan", "unroll"])
    parser.add_argument("--remat", choices=["none", "layer", "dots"], default="none")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", type=int, default=1, help="compile this many batch shapes, as training does")
    parser.add_argument("--threads", type=int, default=0, help="with --shapes: compile threads (0: one per CPU)")
    parser.add_argument("--json", metavar="PATH", help="append one JSON line per variant to PATH")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(compile_once(*args.child, args)))
        return

    shapes = f", {args.shapes} shapes in {args.threads or 'one per CPU'} threads (lower included)" * (args.shapes > 1)
    print(f"{platform.node()} | train step, batch {args.batch} x {args.seconds:g} s, {args.dtype}, remat {args.remat}"
          f"{shapes}")  # fmt: skip
    print("| model | layers | lower (trace) | compile |\n|---|---|---:|---:|")
    for model in args.models:
        for layers in args.layers:
            runs = [run_in_fresh_process(args, model, layers) for _ in range(args.runs)]
            lower, compile_ = [r["lower_s"] for r in runs], [r["compile_s"] for r in runs]
            print(f"| {model} | {layers} | {spread(lower)} | {spread(compile_)} |", flush=True)
            if args.json:
                record = {"model": model, "layers": layers, "remat": args.remat, "batch": args.batch,
                          "shapes": args.shapes, "threads": args.threads,
                          "seconds": args.seconds, "dtype": args.dtype, "device": runs[0]["device"],
                          "host": platform.node(), "lower_s": lower, "compile_s": compile_}  # fmt: skip
                with Path(args.json).open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
