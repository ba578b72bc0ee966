"""Dynamic loss scaling with torch.amp.GradScaler's semantics (init 2**16, x2 every 2000 good steps, /2 on inf).

The reference enables it for both 16-bit dtypes, so it is on whenever compute is not float32. A step whose
gradients are not finite is skipped (parameters and optimizer state unchanged) and the scale is halved.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

INIT_SCALE = 2.0**16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000


class LossScale(NamedTuple):
    """Scale applied to the loss, and how many finite steps in a row were seen since it last changed."""

    scale: jax.Array  # float32 scalar
    growth_tracker: jax.Array  # int32 scalar


def init_loss_scale(*, enabled: bool) -> LossScale:
    """Initial state: 2**16 when enabled, exactly 1 (a no-op) otherwise."""
    return LossScale(jnp.float32(INIT_SCALE if enabled else 1.0), jnp.int32(0))


def all_finite(tree: object) -> jax.Array:
    """Whether every element of every array of `tree` is finite."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def unscale(grads: object, loss_scale: LossScale) -> object:
    """Gradients of the scaled loss -> true gradients (multiplication by the fp32 reciprocal, as torch does)."""
    inverse = jnp.float32(1.0) / loss_scale.scale
    return jax.tree.map(lambda g: g * inverse, grads)


def update_loss_scale(loss_scale: LossScale, finite: jax.Array, *, enabled: bool) -> LossScale:
    """Back off on a non-finite step; grow after GROWTH_INTERVAL finite steps in a row."""
    if not enabled:
        return loss_scale
    tracker = loss_scale.growth_tracker + 1
    grow = tracker == GROWTH_INTERVAL
    scale = jnp.where(
        finite, jnp.where(grow, loss_scale.scale * GROWTH_FACTOR, loss_scale.scale), loss_scale.scale * BACKOFF_FACTOR
    )
    tracker = jnp.where(finite & ~grow, tracker, 0).astype(jnp.int32)
    return LossScale(scale.astype(jnp.float32), tracker)
