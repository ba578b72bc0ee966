"""Time the compiled train step against the reference's step on the same batch shape, and print the ratio.

    python -m bench.step_speed                       # base SpidR, batch 2 x 2 s, float32 on CPU
    python -m bench.step_speed --batch 15 --seconds 15 --dtype bfloat16   # on a GPU (reference: torch.compile)
    python -m bench.step_speed --jax-only --xla-conv-grad   # spidr_jax alone, XLA's own grouped-conv gradient
    python -m bench.step_speed --side reference --torch-compile eager --json out.jsonl   # one side, JSON lines
    python -m bench.step_speed --side jax --profile prof     # + where the step's time goes (bench.step_profile)

The reference step is its training loop body: forward (student, teacher, codebooks), backward, grad clipping,
AdamW, LR scheduler and EMA update, under autocast in 16-bit dtypes (as the reference trains). By default
(`--torch-compile auto`) it runs eager on CPU and under `torch.compile(dynamic=False)` on a GPU (one batch shape,
so no dynamic shapes are needed). Each side prints its figures the moment they exist, and with `--json` appends
them as one JSON line, so a run cut short still reports the side that finished. Not a test: numbers go to
BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import runpy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from spidr_jax.config import DinoSRConfig

PROFILED_STEPS = 2  # steps traced by --profile, after the timed ones

# configs/tiny.py's model (about 0.8 M parameters): for smoke runs and quick suites on a CPU.
TINY_MODEL: dict[str, Any] = runpy.run_path(str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py"))[
    "ARCHITECTURE"
]


def model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields shared by both implementations: none for the base models, the tiny model's with --tiny."""
    return dict(TINY_MODEL) if args.tiny else {}


def jax_model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`model_fields` for the JAX config, which is frozen and hashable: tuples, not lists."""
    fields = model_fields(args)
    if "extractor_conv_layer_config" in fields:
        fields["extractor_conv_layer_config"] = tuple(map(tuple, fields["extractor_conv_layer_config"]))
    return fields


def jax_model_config(args: argparse.Namespace) -> DinoSRConfig:
    """The JAX config of `args.model` (spidr or dinosr; base, or the tiny model with `args.tiny`)."""
    from spidr_jax.config import DinoSRConfig, SpidRConfig

    fields = jax_model_fields(args)
    return SpidRConfig(**fields) if args.model == "spidr" else DinoSRConfig(**fields)


def peak_host_memory() -> int:
    """Peak resident memory of this process in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reference_step(args: argparse.Namespace, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Per-step seconds of the reference training step, and how it ran."""
    import torch
    from spidr.config import DinoSRConfig, SpidRConfig
    from spidr.config import OptimizerConfig as TorchOptimizerConfig
    from spidr.models import DinoSR, SpidR
    from spidr.optimizer import build_optimizer
    from torch.nn.utils import clip_grad_norm_

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = args.torch_compile if args.torch_compile != "auto" else ("static" if device == "cuda" else "eager")
    torch.manual_seed(0)
    fields = model_fields(args)
    model = SpidR(SpidRConfig(**fields)) if args.model == "spidr" else DinoSR(DinoSRConfig(**fields))
    model = model.to(device).train()
    optimizer, scaler, scheduler = build_optimizer(model, TorchOptimizerConfig(dtype=args.dtype))
    if mode != "eager":
        model.compile(dynamic=mode == "dynamic")
    waveforms = torch.from_numpy(batch[0]).to(device)
    indices = torch.from_numpy(np.stack([np.flatnonzero(row) for row in batch[1]])).to(device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def one_step(step: int) -> None:
        with torch.autocast(device, dtype, enabled=args.dtype != "float32"):
            loss, _ = model(waveforms, mask_indices=indices)
        loss = loss.sum() / indices.numel()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        model.update_ema(step)
        if device == "cuda":
            torch.cuda.synchronize()

    def graphs() -> int:  # dynamo's count of compiled graphs: one that grows while timing means recompilations
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    marks: list[int] = []
    warmup_s, times = timed(one_step, args.warmup, args.repeats, after_warmup=lambda: marks.append(graphs()))
    memory = torch.cuda.max_memory_allocated() if device == "cuda" else peak_host_memory()
    return {
        "side": "reference",
        "torch_compile": mode,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "warmup_s": warmup_s,
        "times_s": times,
        "graphs_after_warmup": marks[0],
        "graphs_compiled_while_timing": graphs() - marks[0],
        "peak_memory_bytes": memory,
        "memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "process peak RSS",
    }


def use_xla_conv_gradient() -> None:
    """Swap the positional convolution's hand-written weight gradient for XLA's own (to compare the two)."""
    from spidr_jax.models import positional
    from spidr_jax.models.grouped_conv import _convolve

    positional.grouped_conv1d = _convolve


def compiled_flops(compiled: Any) -> float | None:  # noqa: ANN401 - a jax Compiled object
    """XLA's cost-analysis FLOP count of a compiled program (None where the backend gives none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def device_peak_memory() -> tuple[int | None, str]:
    """Peak memory of the first device where JAX reports it, else this process's peak RSS."""
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not implemented on every backend
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device.memory_stats peak_bytes_in_use"
    return peak_host_memory(), "process peak RSS"


def jax_step(
    args: argparse.Namespace,
    batch: tuple[np.ndarray, np.ndarray],
    on_timed: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Per-step seconds of the compiled JAX training step (all local devices), its compile time and FLOPs.

    `on_timed` receives the figures as soon as the steps are timed, before `--profile` traces more steps (which
    may not finish within a time limit).
    """
    from spidr_jax.config import OptimizerConfig
    from spidr_jax.models.attention_kernel import attention_kernel
    from spidr_jax.models.layer_stack import LayerExecution
    from spidr_jax.sharding import data_mesh, replicated
    from spidr_jax.train.state import init_model, new_train_state
    from spidr_jax.train.step import StepDefinition, compile_train_step
    from spidr_jax.train.workdir import global_batch

    cfg = jax_model_config(args)
    opt = OptimizerConfig(dtype=args.dtype)
    mesh = data_mesh()
    network = init_model(cfg, opt, seed=0)
    network.set_layer_execution(LayerExecution.from_config(args.layer_loop, args.remat, jax.default_backend()))
    network.set_attention_kernel(attention_kernel(args.attention, jax.default_backend(), jnp.dtype(args.dtype)))
    split, state = new_train_state(network, opt, seed=0)
    sharding = replicated(mesh, state)
    state = jax.device_put(state, sharding)
    step_fn = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    device_batch = global_batch({"waveforms": batch[0], "mask": batch[1]}, mesh)
    start = time.perf_counter()
    compiled = step_fn.lower(state, device_batch, extractor_frozen=False).compile()
    compile_s = time.perf_counter() - start
    print(f"  spidr_jax: compiled in {compile_s:.1f} s", flush=True)
    holder = {"state": state}

    def one_step(_: int) -> None:
        holder["state"], metrics = compiled(holder["state"], device_batch)
        jax.block_until_ready(metrics["loss"])

    warmup_s, times = timed(one_step, args.warmup, args.repeats)
    memory, kind = device_peak_memory()
    result = {
        "side": "jax",
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "compile_s": compile_s,
        "warmup_s": warmup_s,
        "times_s": times,
        "flops": compiled_flops(compiled),
        "peak_memory_bytes": memory,
        "memory_kind": kind,
    }
    if on_timed is not None:
        on_timed(result)
    if args.profile:  # after the timed steps, so that the tracer's overhead stays out of them
        from bench.step_profile import describe, profile_steps

        summary = profile_steps(lambda: one_step(0), PROFILED_STEPS, Path(args.profile), compiled.as_text())
        print(describe(summary), flush=True)
    return result


def timed(
    fn: Callable[[int], None], warmup: int, repeats: int, after_warmup: Callable[[], None] | None = None
) -> tuple[float, list[float]]:
    """Seconds of `warmup` untimed calls of `fn(step)` (compilation happens there), then of each timed call."""
    start = time.perf_counter()
    for i in range(warmup):
        fn(i + 1)
    warmup_s = time.perf_counter() - start
    print(f"  warm-up, compilation included: {warmup_s:.1f} s for {warmup} steps", flush=True)
    if after_warmup is not None:
        after_warmup()
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(warmup + i + 1)
        times.append(time.perf_counter() - start)
    return warmup_s, times


def make_batch(batch: int, seconds: float, mask_prob: float = 0.8, stride: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """Random waveforms and a mask with the same number of masked frames per row (frames of a 400/320 extractor)."""
    rng = np.random.default_rng(0)
    samples = int(seconds * 16_000)
    frames = (samples - 400) // stride + 1
    waveforms = rng.standard_normal((batch, samples)).astype(np.float32)
    masked = int(mask_prob * frames)
    mask = np.zeros((batch, frames), bool)
    for row in mask:
        row[rng.choice(frames, masked, replace=False)] = True
    return waveforms, mask


def batch_for(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark batch; frames follow the model's extractor (the tiny one has a 400-sample receptive field too)."""
    if not args.tiny:
        return make_batch(args.batch, args.seconds)
    from spidr_jax.models.extractor import conv_output_lengths

    layers = tuple(map(tuple, TINY_MODEL["extractor_conv_layer_config"]))
    waveforms, _ = make_batch(args.batch, args.seconds)
    frames = int(conv_output_lengths(waveforms.shape[1], layers))
    rng = np.random.default_rng(1)
    mask = np.zeros((args.batch, frames), bool)
    for row in mask:
        row[rng.choice(frames, int(0.8 * frames), replace=False)] = True
    return waveforms, mask


def summarize(result: dict[str, Any], audio_s: float) -> dict[str, Any]:
    """Add median, min and max step time and audio seconds per second to one side's result."""
    times = result["times_s"]
    median = statistics.median(times)
    result.update(median_s=median, min_s=min(times), max_s=max(times), audio_s_per_s=audio_s / median)
    return result


def emit(path: str | None, record: dict[str, Any]) -> None:
    """Append one JSON line to `path` (if given), flushed at once."""
    if path:
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (the original flags unchanged)."""
    parser = argparse.ArgumentParser(prog="python -m bench.step_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["spidr", "dinosr"], default="spidr")
    parser.add_argument("--tiny", action="store_true", help="configs/tiny.py's model instead of base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", choices=["both", "jax", "reference"], default="both")
    parser.add_argument("--jax-only", action="store_true", help="time spidr_jax alone (same as --side jax)")
    parser.add_argument("--xla-conv-grad", action="store_true", help="XLA's grouped-conv weight gradient")
    parser.add_argument("--layer-loop", choices=["auto", "scan", "unroll"], default="auto", help="as run.layer_loop")
    parser.add_argument("--remat", choices=["none", "layer", "dots"], default="none", help="as run.remat")
    parser.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto", help="as run.attention")
    parser.add_argument(
        "--torch-compile",
        choices=["auto", "static", "dynamic", "eager"],
        default="auto",
        help="reference: torch.compile(dynamic=False|True) or eager; auto = static on a GPU, eager on CPU",
    )
    parser.add_argument("--json", metavar="PATH", help="append one JSON line per side to PATH")
    parser.add_argument(
        "--profile", metavar="DIR", help="spidr_jax: trace 2 more steps into DIR (profile.json), print where they go"
    )
    args = parser.parse_args(argv)
    if args.jax_only:
        args.side = "jax"
    return args


def main() -> None:
    """Run the requested sides and print one comparison line."""
    args = parse_args()
    if args.xla_conv_grad:
        use_xla_conv_gradient()
    batch = batch_for(args)
    audio = args.batch * args.seconds
    shape = {
        "model": f"{args.model} {'tiny' if args.tiny else 'base'}",
        "batch": args.batch,
        "seconds": args.seconds,
        "samples_per_device": args.batch * int(args.seconds * 16_000) // jax.local_device_count(),
        "dtype": args.dtype,
        "host": platform.node(),
    }
    variant = " (XLA conv gradient)" if args.xla_conv_grad else ""
    summary = f"{platform.node()} {jax.devices()[0].device_kind} x{jax.device_count()} | {shape['model']}, batch "
    summary += f"{args.batch} x {args.seconds:g} s, {args.dtype}:"
    ours: dict[str, Any] = {}  # filled once our steps are timed
    if args.side in ("both", "jax"):
        variant_fields = {"xla_conv_grad": args.xla_conv_grad, "layer_loop": args.layer_loop, "remat": args.remat}
        variant_fields["attention"] = args.attention

        def report(result: dict[str, Any]) -> None:  # out before a --profile trace, which may be cut short
            ours.update(summarize(result, audio) | shape | variant_fields)
            emit(args.json, ours)
            print(f"  spidr_jax{variant}: {ours['median_s'] * 1e3:.0f} ms/step", flush=True)

        jax_step(args, batch, on_timed=report)
        summary += f" spidr_jax{variant} {ours['median_s'] * 1e3:.0f} ms/step ({ours['audio_s_per_s']:.1f} audio s/s)"
    if args.side in ("both", "reference"):
        reference = summarize(reference_step(args, batch), audio) | shape
        emit(args.json, reference)
        mode = reference["torch_compile"]
        summary += f"{',' if ours else ''} reference ({mode}) {reference['median_s'] * 1e3:.0f} ms/step "
        summary += f"({reference['audio_s_per_s']:.1f} audio s/s)"
        if ours:
            summary += f", speed-up x{reference['median_s'] / ours['median_s']:.2f}"
    print(summary, flush=True)


if __name__ == "__main__":
    sys.exit(main())
