"""The conv feature extractor alone: spidr_jax's module, forward and forward + backward, against im2col.

    python bench/extractor_speed.py                          # SpidR base's extractor, 1 x 8 s and 2 x 2 s, float32
    python bench/extractor_speed.py --batch 4 --seconds 4 --repeats 9

The alternative computes each strided convolution as one matmul over the kernel taps' slices concatenated along
the channels (im2col), with the same norms and GELU, and checks that both give the same features. Median and
spread (min-max) of the timed calls after one compiled warm-up. Not a test: numbers go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from spidr_jax.config.model import DEFAULT_CONV_LAYER_CONFIG
from spidr_jax.models.extractor import FeatureExtractor


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """(B, T, C) -> (B, T_out, O): the taps' strided slices side by side, times the (K * C, O) kernel."""
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


def timed(fn: Callable[[], jax.Array], repeats: int) -> list[float]:
    """Seconds of `repeats` calls, after one (compiling) warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Time both formulations at each batch shape and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, nargs="+", default=[8.0, 2.0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    extractor = FeatureExtractor(DEFAULT_CONV_LAYER_CONFIG, "layer_norm", conv_bias=False, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(extractor)
    variants = {
        "spidr_jax": lambda state, wav: nnx.merge(graphdef, state)(wav),
        "im2col": lambda state, wav: im2col_extractor(nnx.merge(graphdef, state))(wav),
    }
    print(f"{jax.devices()[0].device_kind}, SpidR base extractor, float32, {args.repeats} timed calls")
    for batch, seconds in zip(args.batch, args.seconds, strict=True):
        waveforms = jax.random.normal(jax.random.key(0), (batch, int(seconds * 16_000)))
        outputs = {}
        for name, forward in variants.items():
            forward_fn = jax.jit(forward)
            loss = jax.jit(jax.grad(lambda state, wav, f=forward: jnp.sum(jnp.square(f(state, wav)))))
            outputs[name] = forward_fn(state, waveforms)
            for kind, fn in (("forward", forward_fn), ("forward+backward", loss)):
                times = timed(lambda fn=fn, wav=waveforms: fn(state, wav), args.repeats)
                median = f"{statistics.median(times) * 1e3:.0f} ms ({min(times) * 1e3:.0f}-{max(times) * 1e3:.0f})"
                print(f"  {batch} x {seconds:g} s  {name:>9} {kind:>16}: {median}")
        difference = float(jnp.max(jnp.abs(outputs["spidr_jax"] - outputs["im2col"])))
        print(f"  {batch} x {seconds:g} s  largest difference of the features: {difference:.1e}")


if __name__ == "__main__":
    main()
