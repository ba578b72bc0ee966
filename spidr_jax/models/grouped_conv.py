"""1-D grouped convolution whose weight gradient avoids XLA's grouped-convolution backward.

The forward pass and the input gradient are plain XLA convolutions (fast on every backend). XLA's weight gradient of
a grouped convolution is slow (several times slower than the forward on CPU; a known problem on GPU), so it is
computed instead as one batched matmul per kernel tap: dW[k] = sum over (batch, time) of x[t + k] dy[t], per group.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

DIMENSIONS = ("NWC", "WIO", "NWC")


def _convolve(x: jax.Array, kernel: jax.Array, groups: int, padding: tuple[int, int], precision: object) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1,), padding=(padding,), dimension_numbers=DIMENSIONS,
        feature_group_count=groups, precision=precision,
    )  # fmt: skip


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def grouped_conv1d(
    x: jax.Array, kernel: jax.Array, groups: int, padding: tuple[int, int], precision: object = None
) -> jax.Array:
    """Convolve x (B, T, C) with kernel (K, C / groups, C) -> (B, T + pad - K + 1, C), stride 1."""
    return _convolve(x, kernel, groups, padding, precision)


def _forward(
    x: jax.Array, kernel: jax.Array, groups: int, padding: tuple[int, int], precision: object
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _convolve(x, kernel, groups, padding, precision), (x, kernel)


def _backward(
    groups: int, padding: tuple[int, int], precision: object, residuals: tuple[jax.Array, jax.Array], dy: jax.Array
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _convolve(x, kernel, groups, padding, precision), x)
    (dx,) = input_vjp(dy)
    taps, size, channels = kernel.shape
    batch, frames = dy.shape[:2]
    padded = jnp.pad(x, ((0, 0), padding, (0, 0))).reshape(batch, -1, groups, size)
    dy = dy.reshape(batch, frames, groups, channels // groups)
    dkernel = jnp.stack(
        [jnp.einsum("btgc,btgo->cgo", padded[:, tap : tap + frames], dy, precision=precision) for tap in range(taps)]
    )
    dkernel = dkernel.reshape(taps, size, channels).astype(kernel.dtype)
    # Under shard_map, a kernel shared by every device gets the sum of their gradients (the transpose of its use).
    summed_over = tuple(_varying_axes(dkernel) - _varying_axes(kernel))
    return dx, jax.lax.psum(dkernel, summed_over) if summed_over else dkernel


def _varying_axes(x: jax.Array) -> frozenset[str]:
    """The mesh axes over which `x` differs from device to device (inside shard_map; none outside)."""
    return jax.typeof(x).manual_axis_type.varying


grouped_conv1d.defvjp(_forward, _backward)
