"""Time the compiled train step against the reference's step on the same batch shape, and print the ratio.

    python bench/step_speed.py                       # base SpidR, batch 2 x 2 s, float32 on CPU
    python bench/step_speed.py --batch 8 --seconds 15 --dtype bfloat16   # on a GPU
    python bench/step_speed.py --jax-only --xla-conv-grad   # spidr_jax alone, XLA's own grouped-conv gradient

The reference step is its training loop body: forward (student, teacher, codebooks), backward, grad clipping,
AdamW, LR scheduler and EMA update. Eager on CPU; on a GPU it is compiled with torch.compile and runs under bf16
autocast (as the reference trains). Not a test: numbers go to BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np


def reference_step_time(args: argparse.Namespace, batch: tuple[np.ndarray, np.ndarray]) -> float:
    """Median seconds per reference training step."""
    import torch
    from spidr.config import DinoSRConfig, SpidRConfig
    from spidr.config import OptimizerConfig as TorchOptimizerConfig
    from spidr.models import DinoSR, SpidR
    from spidr.optimizer import build_optimizer
    from torch.nn.utils import clip_grad_norm_

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = (SpidR(SpidRConfig()) if args.model == "spidr" else DinoSR(DinoSRConfig())).to(device).train()
    optimizer, scaler, scheduler = build_optimizer(model, TorchOptimizerConfig(dtype=args.dtype))
    if device == "cuda":
        model.compile(dynamic=True)
    waveforms = torch.from_numpy(batch[0]).to(device)
    indices = torch.from_numpy(np.stack([np.flatnonzero(row) for row in batch[1]])).to(device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]

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

    return timed(one_step, args.warmup, args.repeats)


def use_xla_conv_gradient() -> None:
    """Swap the positional convolution's hand-written weight gradient for XLA's own (to compare the two)."""
    from spidr_jax.models import positional
    from spidr_jax.models.grouped_conv import _convolve

    positional.grouped_conv1d = _convolve


def jax_step_time(args: argparse.Namespace, batch: tuple[np.ndarray, np.ndarray]) -> float:
    """Median seconds per compiled JAX training step (all local devices)."""
    from spidr_jax.config import DinoSRConfig, OptimizerConfig, SpidRConfig
    from spidr_jax.sharding import data_mesh, replicated
    from spidr_jax.train.state import init_model, new_train_state
    from spidr_jax.train.step import StepDefinition, compile_train_step
    from spidr_jax.train.workdir import global_batch

    cfg = SpidRConfig() if args.model == "spidr" else DinoSRConfig()
    opt = OptimizerConfig(dtype=args.dtype)
    mesh = data_mesh()
    split, state = new_train_state(init_model(cfg, opt, seed=0), opt, seed=0)
    sharding = replicated(mesh, state)
    state = jax.device_put(state, sharding)
    step_fn = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    device_batch = global_batch({"waveforms": batch[0], "mask": batch[1]}, mesh)
    holder = {"state": state}

    def one_step(_: int) -> None:
        holder["state"], metrics = step_fn(holder["state"], device_batch, extractor_frozen=False)
        jax.block_until_ready(metrics["loss"])

    return timed(one_step, args.warmup, args.repeats)


def timed(fn, warmup: int, repeats: int) -> float:  # noqa: ANN001
    """Median wall time of `fn(step)` after `warmup` untimed calls (compilation happens there)."""
    start = time.perf_counter()
    for i in range(warmup):
        fn(i + 1)
    print(f"  warm-up, compilation included: {time.perf_counter() - start:.1f} s for {warmup} steps", flush=True)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(warmup + i + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_batch(batch: int, seconds: float, mask_prob: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Random waveforms and a mask with the same number of masked frames per row."""
    rng = np.random.default_rng(0)
    samples = int(seconds * 16_000)
    frames = (samples - 400) // 320 + 1  # the default extractor
    waveforms = rng.standard_normal((batch, samples)).astype(np.float32)
    masked = int(mask_prob * frames)
    mask = np.zeros((batch, frames), bool)
    for row in mask:
        row[rng.choice(frames, masked, replace=False)] = True
    return waveforms, mask


def main() -> None:
    """Run both and print one comparison line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["spidr", "dinosr"], default="spidr")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jax-only", action="store_true", help="time spidr_jax alone")
    parser.add_argument("--xla-conv-grad", action="store_true", help="XLA's grouped-conv weight gradient")
    args = parser.parse_args()
    if args.xla_conv_grad:
        use_xla_conv_gradient()
    batch = make_batch(args.batch, args.seconds)
    ours = jax_step_time(args, batch)
    audio = args.batch * args.seconds
    variant = " (XLA conv gradient)" if args.xla_conv_grad else ""
    print(f"  spidr_jax{variant}: {ours * 1e3:.0f} ms/step", flush=True)
    summary = (
        f"{platform.node()} {jax.devices()[0].device_kind} x{jax.device_count()} | {args.model} base, batch "
        f"{args.batch} x {args.seconds:g} s, {args.dtype}: spidr_jax{variant} {ours * 1e3:.0f} ms/step "
        f"({audio / ours:.1f} audio s/s)"
    )
    if args.jax_only:
        print(summary)
        return
    reference = reference_step_time(args, batch)
    print(
        f"{summary}, reference {reference * 1e3:.0f} ms/step ({audio / reference:.1f} audio s/s), "
        f"speed-up x{reference / ours:.2f}"
    )


if __name__ == "__main__":
    main()
