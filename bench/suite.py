"""Every benchmark figure in one run, side by side with the reference where it has one: one table, one JSON line.

    python bench/suite.py            # CPU: SpidR base, 2 x 2 s, float32; a GPU: 15 x 15 s, bf16
    python bench/suite.py --quick    # configs/tiny.py's model, small shapes and corpora: a few minutes on a CPU
    python bench/suite.py --quick --skip extraction --out results/   # leave a part out; also write files

Figures: the training step (median and min/max of the timed steps, each implementation; the reference eager on
CPU, under torch.compile(dynamic=False) on a GPU); model FLOP utilization (XLA's cost-analysis FLOPs of the
compiled step over its median time, against the data-sheet peak of the device kind where known and against a
matmul rate measured here); peak memory; compile time of the step for the benchmark shape and for bucket shapes;
the static shapes of an epoch of a synthetic LibriSpeech-like manifest under the default data config, and the
audio they crop and pad; the training input pipeline's throughput (spidr_jax.data.pipeline.TrainingData over
generated wav files) against what the step consumes; feature extraction throughput against the reference.
Not a test: the numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Both frameworks share the device: JAX must not take most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import collect  # bench/ modules, importable once bench/ is on the path
import jax
import jax.numpy as jnp
import numpy as np
import step_speed

if TYPE_CHECKING:
    from spidr_jax.config import DataConfig

SAMPLE_RATE = 16_000
PARTS = ("step", "buckets", "compile", "pipeline", "extraction")


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


def librispeech_like_lengths(rows: int, seed: int = 0) -> np.ndarray:
    """Utterance lengths in samples: lognormal around 12 s, kept within 1-35 s (LibriSpeech's training range)."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(12.0), 0.45, rows), 1.0, 35.0)
    return (seconds * SAMPLE_RATE).astype(np.int64)


def bucket_figures(rows: int, num_data_shards: int) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """Static shapes over one epoch of a synthetic manifest under the default data config; and those shapes."""
    from spidr_jax.config import DataConfig
    from spidr_jax.data.batch_plan import EpochPlan
    from spidr_jax.data.buckets import plan_buckets

    cfg = DataConfig()
    lengths = librispeech_like_lengths(rows)
    lengths = lengths[lengths >= max(cfg.min_sample_size, 400)]
    stats = plan_buckets(lengths, cfg, num_data_shards=num_data_shards, num_shapes=cfg.num_static_shapes)
    plan = EpochPlan(
        stats.assignment, stats.lengths, [b.global_batch for b in stats.buckets], seed=0, drop_last=cfg.drop_last
    )
    shapes = sorted({(len(rows_), stats.lengths[bucket]) for bucket, rows_ in plan.epoch(0)})
    figures = {
        "rows": len(lengths),
        "hours": float(lengths.sum() / SAMPLE_RATE / 3600),
        "batches_per_epoch": plan.batches_per_epoch,
        "shapes_in_epoch": len(shapes),
        "shapes": [list(shape) for shape in shapes],
        "crop_fraction": stats.crop_fraction,
        "cap_fraction": stats.cap_fraction,
        "padding_fraction": stats.padding_fraction,
    }
    # The same rows with data.enable_padding: each row padded up or cropped down, whichever wastes less.
    figures["padded"] = waste_figures(lengths, replace(cfg, enable_padding=True), num_data_shards)
    # Short prompts beside long files, with the demo's 2 shapes and the default 8, cropped and padded.
    prompts = prompts_and_long_files()
    figures["prompts_and_long_files"] = {
        f"{count} shapes, {'padded' if padding else 'cropped'}": waste_figures(
            prompts, replace(cfg, enable_padding=padding, num_static_shapes=count), num_data_shards
        )
        for count in (2, 8)
        for padding in (False, True)
    }
    return figures, shapes


def prompts_and_long_files(seed: int = 0) -> np.ndarray:
    """Lengths in samples: 400 prompts of 0.2-2 s beside 600 files lognormal around 20 s, within 2-60 s."""
    rng = np.random.default_rng(seed)
    seconds = np.concatenate([rng.uniform(0.2, 2, 400), rng.lognormal(np.log(20), 0.6, 600).clip(2, 60)])
    return (seconds * SAMPLE_RATE).astype(np.int64)


def waste_figures(lengths: np.ndarray, cfg: DataConfig, num_data_shards: int) -> dict[str, Any]:
    """The static lengths planned for `lengths` under `cfg`, and the audio they crop and pad."""
    from spidr_jax.data.buckets import plan_buckets

    stats = plan_buckets(lengths, cfg, num_data_shards=num_data_shards, num_shapes=cfg.num_static_shapes)
    return {
        "lengths": stats.lengths,
        "crop_fraction": stats.crop_fraction,
        "padding_fraction": stats.padding_fraction,
        "padded_of_audio": stats.padded_samples / stats.capped_samples,
    }


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
    sheet = collect.datasheet_peak(kind, args.dtype)
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
    from spidr_jax.config import DinoSRConfig, OptimizerConfig, SpidRConfig
    from spidr_jax.models.extractor import conv_output_lengths
    from spidr_jax.sharding import data_mesh, replicated
    from spidr_jax.train.state import init_model, new_train_state
    from spidr_jax.train.step import StepDefinition, compile_train_step

    fields = step_speed.model_fields(args)
    if "extractor_conv_layer_config" in fields:
        fields["extractor_conv_layer_config"] = tuple(map(tuple, fields["extractor_conv_layer_config"]))
    cfg = SpidRConfig(**fields) if args.model == "spidr" else DinoSRConfig(**fields)
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


def write_corpus(directory: Path, files: int, seed: int = 0) -> Path:
    """`files` noise wav files with LibriSpeech-like lengths, and their CSV manifest."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rows = ["fileid,path,num_samples"]
    for i, length in enumerate(librispeech_like_lengths(files, seed)):
        path = directory / f"utt{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(length)).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"utt{i},{path},{length}")
    manifest = directory / "train.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def pipeline_figures(args: argparse.Namespace, step_audio_per_s: float | None) -> dict[str, Any]:
    """Audio seconds per second that TrainingData delivers (decoded, normalized, cropped, masked), by worker count."""
    from spidr_jax.config import DinoSRConfig, SpidRConfig

    fields = step_speed.model_fields(args)
    if "extractor_conv_layer_config" in fields:
        fields["extractor_conv_layer_config"] = tuple(map(tuple, fields["extractor_conv_layer_config"]))
    model_cfg = SpidRConfig(**fields) if args.model == "spidr" else DinoSRConfig(**fields)
    out: dict[str, Any] = {"files": args.corpus_files, "by_workers": []}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_corpus(Path(tmp), args.corpus_files)
        for workers in args.workers:
            try:
                entry = pipeline_rate(args, manifest, model_cfg, workers)
            except Exception as error:  # noqa: BLE001 - keep the other worker counts' figures
                entry = {"num_workers": workers, "error": f"{type(error).__name__}: {error}"}
                print(f"  pipeline, {workers} workers: failed: {entry['error']}", flush=True)
            if step_audio_per_s and "audio_s_per_s" in entry:
                entry["vs_step"] = entry["audio_s_per_s"] / step_audio_per_s
            out["by_workers"].append(entry)
    return out


def pipeline_rate(args: argparse.Namespace, manifest: Path, model_cfg: object, workers: int) -> dict[str, Any]:
    """Seconds to the first batch and audio s/s over the next `args.pipeline_batches` batches, `workers` workers."""
    from spidr_jax.config import DataConfig, MaskingConfig
    from spidr_jax.data.pipeline import TrainingData

    data = TrainingData(
        DataConfig(manifest=str(manifest), num_workers=workers),
        MaskingConfig(),
        model_cfg,
        seed=0,
        num_data_shards=1,
        process_index=0,
        process_count=1,
        progress=False,
    )
    start = time.perf_counter()
    samples = 0
    with data.iterator(0, args.pipeline_batches + 1) as batches:
        _, first = next(batches)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        for _, batch in batches:
            samples += batch["waveforms"].size
    elapsed = time.perf_counter() - start
    rate = samples / SAMPLE_RATE / elapsed
    entry = {"num_workers": workers, "first_batch_s": first_s, "batches": args.pipeline_batches}
    entry |= {"audio_s_per_s": rate, "batch_shape": list(first["waveforms"].shape)}
    print(f"  pipeline, {workers} workers: {rate:.0f} audio s/s", flush=True)
    return entry


def extraction_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Feature extraction throughput of both implementations (bench/extract_speed.py)."""
    import extract_speed

    return extract_speed.measure(args.extract_files, 6, max_shapes=args.extract_shapes, runs=2)


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


def parse_args() -> argparse.Namespace:
    """The command line; --quick sets small defaults for anything not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, small shapes and corpora")
    parser.add_argument("--model", choices=["spidr", "dinosr"], default="spidr")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per implementation")
    parser.add_argument("--manifest-rows", type=int, default=3000, help="rows of the synthetic manifest")
    parser.add_argument("--compile-buckets", type=int, default=2, help="longest bucket shapes to compile, not run")
    parser.add_argument("--corpus-files", type=int, help="wav files for the input pipeline")
    parser.add_argument("--pipeline-batches", type=int, help="batches timed per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts of the pipeline")
    parser.add_argument("--extract-files", type=int)
    parser.add_argument("--extract-shapes", type=int)
    parser.add_argument("--skip", nargs="*", default=[], choices=[*PARTS, "reference"], help="parts to leave out")
    parser.add_argument("--out", type=Path, help="also write suite.json and suite.md into this folder")
    args = parser.parse_args()
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
    return args


def main() -> None:
    """Run the parts in order (a failing part is reported, the others still run); print the table and JSON."""
    args = parse_args()
    begin = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "host": platform.node(),
            "device": jax.devices()[0].device_kind,
            "devices": jax.device_count(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "options": {k: v for k, v in vars(args).items() if k not in ("out", "skip_sides")} | {"out": str(args.out)},
        "errors": {},
    }
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
        (args.out / "suite.json").write_text(line + "\n", encoding="utf-8")
        (args.out / "suite.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
