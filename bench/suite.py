"""Every benchmark figure in one run, side by side with the reference where it has one: one table, one JSON line.

    python -m bench.suite            # CPU: SpidR base, 2 x 2 s, float32; a GPU: 15 x 15 s, bf16
    python -m bench.suite --quick    # configs/tiny.py's model, small shapes and corpora: a few minutes on a CPU
    python -m bench.suite --quick --skip extraction --out results/   # leave a part out; also write files
    python -m bench.suite --gpu [RESULTS_DIR]           # the 8-minute GPU run (what bash bench/gpu.sh runs)
    python -m bench.suite --gpu --cpu-smoke [RESULTS_DIR]   # the GPU run's parts on this CPU, tiny: a check

In one process (without --gpu), figures: the training step (median and min/max of the timed steps, each
implementation; the reference eager on CPU, under torch.compile(dynamic=False) on a GPU); model FLOP utilization
(XLA's cost-analysis FLOPs of the compiled step over its median time, against the data-sheet peak of the device
kind where known and against a matmul rate measured here); peak memory; compile time of the step for the
benchmark shape and for bucket shapes; the static shapes of an epoch of a synthetic LibriSpeech-like manifest
under the default data config, and the audio they crop and pad; the training input pipeline's throughput
(spidr_jax.data.pipeline.TrainingData over generated wav files) against what the step consumes; feature
extraction throughput against the reference.

With --gpu, each part is a process of its own under a time limit, within 8 minutes in all: see bench.gpu_run.
Not a test: the numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu_run import run_gpu
from bench.results import write_whole
from bench.workload import SAMPLE_RATE

PARTS = ("step", "buckets", "compile", "pipeline", "extraction")


def extraction_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Feature extraction throughput of both implementations (bench.extraction throughput)."""
    from bench import extraction

    return extraction.measure(args.extract_files, 6, max_shapes=args.extract_shapes, runs=2)


def step_rows(step: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table rows of the training step part."""
    rows: list[tuple[str, str, str, str]] = []
    ours = step["jax"]
    shape = f"{ours['model']} {ours['batch']} x {ours['seconds']:g} s {ours['dtype']}"
    spread = f"{ours['median_s'] * 1e3:.1f} ms ({ours['min_s'] * 1e3:.1f}-{ours['max_s'] * 1e3:.1f})"
    ref = step.get("reference")
    ref_text = "skipped"
    if ref:
        ref_text = f"{ref['median_s'] * 1e3:.1f} ms ({ref['min_s'] * 1e3:.1f}-{ref['max_s'] * 1e3:.1f})"
        ref_text += f", {ref['torch_compile']}"
    ratio = f"x{step['speedup']:.2f}" if "speedup" in step else ""
    rows.append((f"train step, {shape}, median (min-max)", spread, ref_text, ratio))
    ref_rate = f"{ref['audio_s_per_s']:.1f}" if ref else ""
    rows.append(("step audio s/s", f"{ours['audio_s_per_s']:.1f}", ref_rate, ""))
    if "mfu_measured_peak" in step:
        note = f"{step['flops_per_s'] / 1e9:.1f} GFLOP/s of {step['peak_flops_measured'] / 1e9:.1f} measured"
        rows.append(("MFU vs measured matmul peak", f"{step['mfu_measured_peak']:.1%}", "", note))
    if "mfu_datasheet" in step:
        note = f"data-sheet peak {step['peak_flops_datasheet'] / 1e12:.0f} TFLOP/s"
        rows.append(("MFU vs data-sheet peak", f"{step['mfu_datasheet']:.1%}", "", note))
    memory = f"{ours['peak_memory_bytes'] / 2**30:.2f} GiB"
    ref_memory = f"{ref['peak_memory_bytes'] / 2**30:.2f} GiB" if ref else ""
    rows.append(("peak memory", memory, ref_memory, f"{ours['memory_kind']} / {ref['memory_kind'] if ref else ''}"))
    rows.append(("step compile, benchmark shape", f"{ours['compile_s']:.1f} s", "", ""))
    return rows


def table(results: dict[str, Any]) -> str:
    """One Markdown table of every figure obtained."""
    rows: list[tuple[str, str, str, str]] = [("figure", "spidr-jax", "reference", "ratio / note")]
    if results.get("step"):
        rows += step_rows(results["step"])
    for timing in results.get("compile", {}).get("per_shape", []):
        label = f"step compile, {timing['batch']} x {timing['samples'] / SAMPLE_RATE:g} s"
        rows.append((label, f"{timing['compile_s']:.1f} s", "", "compile only"))
    buckets = results.get("buckets")
    if buckets:
        label = f"static shapes, epoch of {buckets['rows']} rows ({buckets['hours']:.1f} h)"
        rows.append((label, str(buckets["shapes_in_epoch"]), "", f"{buckets['batches_per_epoch']} batches"))
        rows.append(("audio cropped to bucket lengths", f"{buckets['crop_fraction']:.2%}", "", "padding 0%"))
        rows.append(("audio beyond max_sample_size", f"{buckets['cap_fraction']:.2%}", "", "cropped by both"))
        padded = buckets.get("padded")
        if padded:
            label = f"data.enable_padding: cropped / padded, {len(padded['lengths'])} shapes"
            text = f"{padded['crop_fraction']:.2%} / {padded['padding_fraction']:.2%}"
            rows.append((label, text, "", "padding: of the batches' samples"))
        for case, waste in buckets.get("prompts_and_long_files", {}).items():
            text = f"{waste['crop_fraction']:.2%} / {waste['padding_fraction']:.2%}"
            rows.append((f"prompts beside long files, {case}: cropped / padded", text, "", ""))
    for entry in results.get("pipeline", {}).get("by_workers", []):
        label = f"input pipeline, {entry['num_workers']} workers, audio s/s"
        if "error" in entry:
            rows.append((label, "failed", "", entry["error"][:100].replace("|", "/")))
            continue
        note = f"x{entry['vs_step']:.1f} the step's consumption" if "vs_step" in entry else ""
        rows.append((label, f"{entry['audio_s_per_s']:.0f}", "", note))
    extract = results.get("extraction")
    if extract:
        label = f"extraction, {extract['files']} files ({extract['audio_s']:.0f} s), audio s/s"
        ours_text, ref_text = f"{extract['jax_audio_s_per_s']:.1f}", f"{extract['reference_audio_s_per_s']:.1f}"
        rows.append((label, ours_text, ref_text, f"x{extract['speedup']:.2f}"))
    for name, error in results.get("errors", {}).items():
        rows.append((f"{name} failed", "", "", error[:100].replace("|", "/")))
    lines = ["| " + " | ".join(rows[0]) + " |", "|---|---:|---:|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --quick sets small defaults for anything not given."""
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, small shapes and corpora")
    parser.add_argument("--model", choices=["spidr", "dinosr"], default="spidr", help="the model of the step")
    parser.add_argument("--batch", type=int, help="rows of the step's batch (default 2 on a CPU, 15 on a GPU)")
    parser.add_argument("--seconds", type=float, help="seconds per row of the step's batch")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="the step's compute dtype")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens there)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per implementation")
    parser.add_argument("--manifest-rows", type=int, default=3000, help="rows of the synthetic manifest")
    parser.add_argument("--compile-buckets", type=int, default=2, help="longest bucket shapes to compile, not run")
    parser.add_argument("--corpus-files", type=int, help="wav files for the input pipeline")
    parser.add_argument("--pipeline-batches", type=int, help="batches timed per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts of the pipeline")
    parser.add_argument("--extract-files", type=int, help="files of the extraction part")
    parser.add_argument("--extract-shapes", type=int, help="padded lengths (compilations) of our extraction")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*PARTS, "reference"], help="parts to leave out")
    parser.add_argument("--out", type=Path, help="also write suite.json and suite.md into this folder")
    parser.add_argument("--gpu", action="store_true", help="the 8-minute GPU run instead, parts as processes")
    parser.add_argument("--cpu-smoke", action="store_true", help="with --gpu: its parts on this CPU, tiny model")
    parser.add_argument("results_dir", nargs="?", type=Path, help="with --gpu: the results folder (default: dated)")
    args = parser.parse_args(argv)
    if not args.gpu and (args.cpu_smoke or args.results_dir):
        parser.error("--cpu-smoke and RESULTS_DIR go with --gpu")
    return args


def in_process_defaults(args: argparse.Namespace) -> None:
    """Fill what the command line left out for this device (with --quick: small settings)."""
    import jax

    gpu = jax.devices()[0].platform != "cpu"
    defaults = {
        "batch": 4 if args.quick else (15 if gpu else 2),
        "seconds": 2.0 if args.quick else (15.0 if gpu else 2.0),
        "dtype": "bfloat16" if gpu else "float32",
        "corpus_files": 24 if args.quick else 96,
        "pipeline_batches": 8 if args.quick else 20,
        "extract_files": 6 if args.quick else (40 if gpu else 24),
        "extract_shapes": 1 if args.quick else (2 if gpu else 8),
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.tiny = args.quick
    args.skip_sides = {"reference"} & set(args.skip)


def machine() -> dict[str, Any]:
    """The host, the first device and the versions."""
    import jax

    return {
        "host": platform.node(),
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def run_in_process(args: argparse.Namespace) -> None:
    """Run the parts in order (a failing part is reported, the others still run); print the table and JSON."""
    # Both frameworks share the device: JAX must not take most of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    from bench.data_figures import bucket_figures, pipeline_figures
    from bench.step_figures import compile_figures, step_figures

    in_process_defaults(args)
    begin = time.perf_counter()
    options = {k: v for k, v in vars(args).items() if k not in ("out", "skip_sides", "gpu", "cpu_smoke", "results_dir")}
    results: dict[str, Any] = {"machine": machine(), "options": options | {"out": str(args.out)}, "errors": {}}
    results["options"]["skip_sides"] = sorted(args.skip_sides)

    def run(name: str, fn: Any, *fn_args: Any) -> Any:  # noqa: ANN401 - any part's result
        if name in args.skip:
            return None
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            results[name] = fn(*fn_args)
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others' figures
            results["errors"][name] = f"{type(error).__name__}: {error}"
            print(f"  {name} failed: {results['errors'][name]}", flush=True)
            return None
        results.setdefault("seconds", {})[name] = time.perf_counter() - start
        return results[name]

    step = run("step", step_figures, args)
    buckets = run("buckets", bucket_figures, args.manifest_rows, jax.device_count())
    if buckets is not None:
        results["buckets"], shapes = buckets
        run("compile", compile_figures, args, shapes)
    run("pipeline", pipeline_figures, args, step["jax"]["audio_s_per_s"] if step else None)
    run("extraction", extraction_figures, args)
    results["total_s"] = time.perf_counter() - begin
    line = json.dumps(results)
    text = table(results)
    print(text)
    print(line)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_whole(args.out / "suite.json", line)
        write_whole(args.out / "suite.md", text)


def main(argv: list[str] | None = None) -> None:
    """The in-process suite, or with --gpu the GPU run's parts (exit status 2 if their limits exceed the total)."""
    args = parse_args(argv)
    if args.gpu:
        sys.exit(run_gpu(args.results_dir, smoke=args.cpu_smoke))
    run_in_process(args)


if __name__ == "__main__":
    main()
