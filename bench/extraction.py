"""Feature extraction benchmarks, SpidR base with random weights: throughput, the conv extractor, one long file.

    python -m bench.extraction throughput            # 24 files of 1-8 s, layer 6, both implementations
    python -m bench.extraction throughput --files 40 --max-shapes 2 --runs 1 --json out.jsonl   # one JSON line
    python -m bench.extraction throughput --files 40 --no-reference-process   # no whole-process timing
    python -m bench.extraction extractor             # the conv extractor alone, 1 x 8 s and 2 x 2 s, float32
    python -m bench.extraction extractor --batch 4 --seconds 4 --repeats 9
    python -m bench.extraction long-file-memory --minutes 1 3 5        # peak memory and time of one long file
    python -m bench.extraction long-file-memory --minutes 10 --units
    python -m bench.extraction long-file-memory --minutes 10 30 60 --compile-only

throughput: audio seconds per second against the reference on the same files. The reference extracts one file at
a time (its paper/extract_features.py); spidr_jax batches files into a few static padded shapes over all devices
(`python -m spidr_jax.extract`). Both sides are also timed as a user times a command: a whole process that starts,
loads the model, reads every file and writes its features (ours with an empty compilation cache, then with the
cache the first run filled).

extractor: spidr_jax's conv feature extractor, forward and forward + backward, against an im2col formulation (each
strided convolution as one matmul over the kernel taps' slices side by side, same norms and GELU), checking that
both give the same features. Median and spread (min-max) of the timed calls after one compiled warm-up.

long-file-memory: for each length, a child process builds the model, extracts the file (features of --layer, or
units) through the same path as `python -m spidr_jax.extract` (spidr_jax.extract.inference.model_outputs); the
parent reports the child's peak resident memory (ru_maxrss) and wall time. `--compile-only` compiles the program
for each length without running it and prints XLA's buffer plan, for lengths too long to run here.
Not a test: numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import module_command
from bench.workload import (
    SAMPLE_RATE,
    convert_for_jax,
    load_reference,
    manifest_files,
    random_reference_checkpoint,
    uniform_lengths,
    write_corpus,
)

if TYPE_CHECKING:
    import jax
    import torch

    from spidr_jax.models.extractor import FeatureExtractor


def timed_process(command: list[str], **kwargs: Any) -> tuple[subprocess.CompletedProcess, float]:  # noqa: ANN401
    """Run `command` to its end (failing if it fails); its result and wall seconds."""
    start = time.perf_counter()
    result = subprocess.run(command, check=True, **kwargs)
    return result, time.perf_counter() - start


def audio_seconds(clips: list[np.ndarray]) -> float:
    """Seconds of audio in `clips`."""
    return sum(len(clip) for clip in clips) / SAMPLE_RATE


# -- throughput ----------------------------------------------------------------------------------------------------


def reference_layer(model: torch.nn.Module, device: str, clip: np.ndarray, layer: int) -> torch.Tensor:
    """The reference's features of a 1-based layer for one clip, standardized as its extraction script does."""
    import torch
    import torch.nn.functional as F

    wav = torch.from_numpy(clip).to(device)[None]
    return model.get_intermediate_outputs(F.layer_norm(wav, wav.shape))[layer - 1]


def reference_throughput(checkpoint: Path, clips: list[np.ndarray], layer: int) -> float:
    """Audio seconds per second of the reference, one file at a time (after one warm-up file)."""
    import torch

    model, device = load_reference(checkpoint)
    with torch.inference_mode():
        model.get_intermediate_outputs(torch.zeros(1, SAMPLE_RATE, device=device))
        start = time.perf_counter()
        for clip in clips:
            reference_layer(model, device, clip, layer).cpu()
        elapsed = time.perf_counter() - start
    return audio_seconds(clips) / elapsed


def reference_process(checkpoint: Path, manifest: Path, layer: int, output: Path) -> None:
    """What a user's extraction script with the reference does: load the model, then per file read, run, save."""
    import soundfile as sf
    import torch

    model, device = load_reference(checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for fileid, path in manifest_files(manifest):
            features = reference_layer(model, device, sf.read(path, dtype="float32")[0], layer)
            np.save(output / f"{fileid}.npy", features[0].float().cpu().numpy())


def ours_extraction(root: Path, manifest: Path, layer: int, max_shapes: int, runs: int) -> tuple[float, dict]:
    """Throughput of the last run of the extraction CLI, and each run's wall seconds ("cold", then "warm").

    The CLI's throughput covers its whole loop, compilation included. The runs share a persistent compilation
    cache in `root`, empty at first, so with two runs the second loads the programs the first compiled.
    """
    env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(root / "jax-cache")}
    rate, walls = 0.0, {}
    for attempt in ("cold", "warm")[:runs]:
        command = [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(root / "jax"), "--manifest",
                   str(manifest), "--output", str(root / f"features-{attempt}"), "--layer", str(layer), "--quiet",
                   "--max-shapes", str(max_shapes)]  # fmt: skip
        result, walls[attempt] = timed_process(command, capture_output=True, text=True, env=env)
        summary = result.stderr.strip().splitlines()[-1]
        rate = float(summary.split("(")[1].split(" audio")[0])
        print(f"spidr_jax ({attempt}): {summary} [process {walls[attempt]:.1f} s]", flush=True)
    return rate, walls


def measure(
    files: int, layer: int, *, max_shapes: int = 8, runs: int = 2, reference_process_time: bool = True
) -> dict[str, object]:
    """Convert a random reference model, extract with both; throughputs of the last run of ours and the reference."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        manifest = write_corpus(root, uniform_lengths(rng, files), rng)
        clips = [sf.read(path, dtype="float32")[0] for _, path in manifest_files(manifest)]
        checkpoint = random_reference_checkpoint(root / "spidr.pt")
        convert_for_jax(checkpoint, root / "jax")
        ours, walls = ours_extraction(root, manifest, layer, max_shapes, runs)
        last = walls[("cold", "warm")[runs - 1]]
        reference = reference_throughput(checkpoint, clips, layer)
        figures: dict[str, object] = {}
        if reference_process_time:
            internal = ["--reference-process", str(checkpoint), str(manifest), str(layer), str(root / "reference")]
            _, wall = timed_process(module_command("extraction", "throughput", *internal))
            print(f"reference (a whole process): {wall:.1f} s", flush=True)
            figures = {"reference_process_s": wall, "process_speedup_cold": wall / walls["cold"]}
            figures["process_speedup"] = wall / last
    import jax

    return {
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "files": files,
        "audio_s": audio_seconds(clips),
        "layer": layer,
        "max_shapes": max_shapes,
        "runs": runs,
        "jax_audio_s_per_s": ours,
        "jax_process_s": last,
        "jax_process_cold_s": walls["cold"],
        "reference_audio_s_per_s": reference,
        "speedup": ours / reference,
    } | figures


def throughput(args: argparse.Namespace) -> None:
    """The throughput mode: measure, print the ratio (and append a JSON line with --json)."""
    if args.reference_process:  # the reference's side of the whole-process timing, in its own process
        checkpoint, manifest, layer, output = args.reference_process
        reference_process(Path(checkpoint), Path(manifest), int(layer), Path(output))
        return
    result = measure(
        args.files, args.layer, max_shapes=args.max_shapes, runs=args.runs,
        reference_process_time=not args.no_reference_process,
    )  # fmt: skip
    if args.json:
        with Path(args.json).open("a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    ours, reference = result["jax_audio_s_per_s"], result["reference_audio_s_per_s"]
    line = (
        f"{platform.node()} {result['device']} | base SpidR layer {args.layer}, "
        f"{args.files} files: spidr_jax {ours:.1f} audio s/s (warm), reference {reference:.1f} audio s/s, "
        f"speed-up x{ours / reference:.2f}"
    )
    if "reference_process_s" in result:
        line += (
            f"; whole processes: reference {result['reference_process_s']:.1f} s, spidr_jax "
            f"{result['jax_process_cold_s']:.1f} s (empty cache) / {result['jax_process_s']:.1f} s "
            f"(x{result['process_speedup']:.2f})"
        )
    print(line)


# -- extractor -----------------------------------------------------------------------------------------------------


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """(B, T, C) -> (B, T_out, O): the taps' strided slices side by side, times the (K * C, O) kernel."""
    import jax
    import jax.numpy as jnp

    taps = kernel.shape[0]
    frames = (x.shape[1] - taps) // stride + 1
    end = (frames - 1) * stride + 1
    patches = jnp.concatenate([jax.lax.slice_in_dim(x, j, j + end, stride, axis=1) for j in range(taps)], axis=-1)
    return patches @ kernel.reshape(taps * x.shape[2], -1)


def im2col_extractor(extractor: FeatureExtractor) -> Callable[[jax.Array], jax.Array]:
    """The extractor's forward pass with its convolutions done by `im2col_conv` (layer-norm mode, no bias)."""

    def forward(waveforms: jax.Array) -> jax.Array:
        x = waveforms[:, :, None]
        for (_, _, stride), block in zip(extractor.conv_specs, extractor.conv_layers, strict=True):
            x = block.activate(im2col_conv(x, block.kernel[...], stride), None)
        return x

    return forward


def timed_calls(fn: Callable[[], jax.Array], repeats: int) -> list[float]:
    """Seconds of `repeats` calls, after one (compiling) warm-up."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def extractor(args: argparse.Namespace) -> None:
    """The extractor mode: time both formulations at each batch shape, one line per measurement."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from spidr_jax.config.model import DEFAULT_CONV_LAYER_CONFIG
    from spidr_jax.models.extractor import FeatureExtractor

    module = FeatureExtractor(DEFAULT_CONV_LAYER_CONFIG, "layer_norm", conv_bias=False, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(module)
    variants = {
        "spidr_jax": lambda state, wav: nnx.merge(graphdef, state)(wav),
        "im2col": lambda state, wav: im2col_extractor(nnx.merge(graphdef, state))(wav),
    }
    print(f"{jax.devices()[0].device_kind}, SpidR base extractor, float32, {args.repeats} timed calls")
    for batch, seconds in zip(args.batch, args.seconds, strict=True):
        waveforms = jax.random.normal(jax.random.key(0), (batch, int(seconds * SAMPLE_RATE)))
        outputs = {}
        for name, forward in variants.items():
            forward_fn = jax.jit(forward)
            loss = jax.jit(jax.grad(lambda state, wav, f=forward: jnp.sum(jnp.square(f(state, wav)))))
            outputs[name] = forward_fn(state, waveforms)
            for kind, fn in (("forward", forward_fn), ("forward+backward", loss)):
                times = timed_calls(lambda fn=fn, wav=waveforms: fn(state, wav), args.repeats)
                median = f"{statistics.median(times) * 1e3:.0f} ms ({min(times) * 1e3:.0f}-{max(times) * 1e3:.0f})"
                print(f"  {batch} x {seconds:g} s  {name:>9} {kind:>16}: {median}")
        difference = float(jnp.max(jnp.abs(outputs["spidr_jax"] - outputs["im2col"])))
        print(f"  {batch} x {seconds:g} s  largest difference of the features: {difference:.1e}")


# -- long-file-memory ----------------------------------------------------------------------------------------------


def long_file_child(path: Path, layer: int, *, units: bool) -> None:
    """Build SpidR base and extract the file at `path`; print its frames and the extraction time."""
    import jax.numpy as jnp
    import soundfile as sf

    from spidr_jax.config import SpidRConfig
    from spidr_jax.data.manifest import ManifestRow
    from spidr_jax.extract.inference import model_outputs
    from spidr_jax.models import build_model
    from spidr_jax.models.layer_outputs import features_at, units_at

    model = build_model(SpidRConfig(), dtype=jnp.float32)
    row = ManifestRow(fileid="long", path=str(path), num_samples=sf.info(path).frames)
    output = units_at(layer, model.config) if units else features_at(layer)
    start = time.perf_counter()
    (result,) = list(model_outputs(model, [row], output))
    if result.error is not None:
        raise SystemExit(f"failed: {result.error}")
    print(f"frames={result.value.shape[0]} seconds={time.perf_counter() - start:.1f}")


def compile_only(minutes: list[float], layer: int) -> None:
    """Print XLA's memory plan of the extraction program for files of these lengths (nothing runs)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from spidr_jax.config import SpidRConfig
    from spidr_jax.extract.inference import compiled_output
    from spidr_jax.models import build_model
    from spidr_jax.models.layer_outputs import features_at

    graphdef, state = nnx.split(build_model(SpidRConfig()))
    run = compiled_output(graphdef, features_at(layer))
    for length in minutes:
        samples = jax.ShapeDtypeStruct((1, int(length * 60 * SAMPLE_RATE)), jnp.float32)
        plan = run.lower(state, samples, jax.ShapeDtypeStruct((1,), jnp.int32)).compile().memory_analysis()
        print(
            f"{length:g} min, features of layer {layer} (compiled, not run): XLA temporaries "
            f"{plan.temp_size_in_bytes / 2**30:.2f} GiB, arguments {plan.argument_size_in_bytes / 2**30:.2f} GiB, "
            f"outputs {plan.output_size_in_bytes / 2**30:.2f} GiB",
            flush=True,
        )


def long_file_run(minutes: float, layer: int, *, units: bool, workdir: Path) -> str:
    """Run one child on a file of `minutes` of noise; its summary line."""
    path = workdir / f"long_{minutes:g}min.wav"
    if not path.exists():
        import soundfile as sf

        rng = np.random.default_rng(0)
        sf.write(path, (0.1 * rng.standard_normal(int(minutes * 60 * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE)
    units_flag = ["--units"] if units else []
    command = module_command("extraction", "long-file-memory", "--child", str(path), "--layer", str(layer), *units_flag)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return f"{minutes:g} min: child failed ({os.waitstatus_to_exitcode(status)}): {err.strip()[-500:]}"
    what = f"units of layer {layer}" if units else f"features of layer {layer}"
    peak_gb = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return f"{minutes:g} min, {what}: peak RSS {peak_gb:.2f} GiB, {wall:.0f} s in all ({out.strip()})"


def long_file_memory(args: argparse.Namespace) -> None:
    """The long-file-memory mode: the children one after the other (or the compiled plans only)."""
    if args.compile_only:
        compile_only(args.minutes, args.layer)
    elif args.child is not None:
        long_file_child(args.child, args.layer, units=args.units)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            for minutes in args.minutes:
                print(long_file_run(minutes, args.layer, units=args.units, workdir=Path(workdir)), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: one subcommand per mode, each with the flags of its own."""
    parser = argparse.ArgumentParser(prog="python -m bench.extraction", description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    speed = modes.add_parser("throughput", help="extraction throughput against the reference, same files")
    speed.add_argument("--files", type=int, default=24, help="noise files of 1-8 s")
    speed.add_argument("--layer", type=int, default=6, help="1-based layer whose features are extracted")
    speed.add_argument("--max-shapes", type=int, default=8, help="padded lengths for spidr_jax (compilations)")
    speed.add_argument("--runs", type=int, choices=[1, 2], default=2, help="runs of ours; the last one counts")
    speed.add_argument("--json", metavar="PATH", help="append the figures as one JSON line to PATH")
    speed.add_argument("--no-reference-process", action="store_true", help="skip the reference's whole process")
    speed.add_argument(
        "--reference-process", nargs=4, metavar=("PT", "MANIFEST", "LAYER", "OUT"), help=argparse.SUPPRESS
    )
    speed.set_defaults(run=throughput)
    conv = modes.add_parser("extractor", help="the conv extractor alone, against an im2col formulation")
    conv.add_argument("--batch", type=int, nargs="+", default=[1, 2], help="batch sizes, one per shape")
    conv.add_argument("--seconds", type=float, nargs="+", default=[8.0, 2.0], help="seconds per row, one per shape")
    conv.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    conv.set_defaults(run=extractor)
    long = modes.add_parser("long-file-memory", help="peak memory and time of extracting one long file")
    long.add_argument("--minutes", type=float, nargs="+", default=[1.0, 3.0], help="file lengths, one child each")
    long.add_argument("--layer", type=int, default=12, help="1-based layer (12: every layer runs)")
    long.add_argument("--units", action="store_true", help="extract units instead of features")
    long.add_argument("--compile-only", action="store_true", help="print XLA's memory plan, run nothing")
    long.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    long.set_defaults(run=long_file_memory)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the chosen mode."""
    args = parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
