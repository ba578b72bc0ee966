"""Teacher EMA decay schedules of DinoSR and SpidR, as jit-able functions of the training step.

The step is the one given to the model's EMA update, counted after the optimizer update (1 for the first update).

- DinoSR: the decay rises linearly from `ema_start_decay` at step 0 to `ema_final_decay` at `ema_final_step`, stays
  there until `freeze_step`, then is exactly 1 (the teacher is frozen). The linear ramp is checked first, so a
  `freeze_step` below `ema_final_step` only takes effect once the ramp is over.
- SpidR: `1 - (1 - ema_start_decay) * exp(-step / ema_timescale)`, and exactly 1 from the first step where
  `1 - decay <= ema_threshold`.

The teacher moves towards the student by the lerp weight `1 - decay`, and only while `0 < decay < 1`. For a decay
near 1, `1 - float32(decay)` keeps only a few significant bits, so the weight is computed directly as
`(1 - final) + (final - start) * (F - step) / F` or `(1 - start) * exp(-step / timescale)`, and the decay as one
minus the weight. The step where a schedule switches to 1 is an integer found on the host with the reference's own
float64 arithmetic, so the traced functions switch at exactly the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from spidr_jax.config.model import DinoSRConfig, SpidRConfig
from spidr_jax.train.schedules import Schedule, scaled_exp

_INT32_MAX = 2**31 - 1
# step -> (1 - decay before the switch to 1, whether the decay is exactly 1)
_Parts = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def ema_decay_schedule(cfg: DinoSRConfig) -> Schedule:
    """The teacher EMA decay for the (1-based) training step, as a jit-able function of an int32 step.

    A float32 decay within 3e-8 of 1 reads as 1 although the teacher still moves; `ema_weight_schedule` gives the
    weight to update with.
    """
    parts = _ema_parts(cfg)

    def decay(step: jax.Array | int) -> jax.Array:
        weight, is_one = parts(jnp.asarray(step, dtype=jnp.int32))
        return jnp.where(is_one, jnp.float32(1), 1 - weight)

    return decay


def ema_weight_schedule(cfg: DinoSRConfig) -> Schedule:
    """The lerp weight `1 - decay` towards the student for the (1-based) training step, accurate in float32.

    It is 0 on the steps where no EMA update happens (decay exactly 1, or outside (0, 1) for odd configurations), so
    `teacher + weight * (student - teacher)` can run on every step.
    """
    parts = _ema_parts(cfg)

    def weight(step: jax.Array | int) -> jax.Array:
        w, is_one = parts(jnp.asarray(step, dtype=jnp.int32))
        return jnp.where(~is_one & (w > 0) & (w < 1), w, jnp.float32(0))

    return weight


def spidr_switch_step(start_decay: float, timescale: float, threshold: float) -> int | None:
    """The first step >= 0 where SpidR's decay becomes exactly 1, or None if that is past the int32 range.

    Evaluates the reference's test `1 - decay > threshold` in float64, exactly as written there; `1 - decay` only
    shrinks with the step, so a bisection finds the boundary.
    """

    def is_one(step: int) -> bool:
        decay = 1 - (1 - start_decay) * math.exp(-step / timescale)
        return not 1 - decay > threshold

    if not is_one(_INT32_MAX):
        return None
    lo, hi = -1, _INT32_MAX  # is_one(lo) is False (or lo is before 0), is_one(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if is_one(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _ema_parts(cfg: DinoSRConfig) -> _Parts:
    """The weight and the "decay is exactly 1" mask of the config's schedule (SpidR or DinoSR)."""
    if isinstance(cfg, SpidRConfig):
        scale, rate = 1 - cfg.ema_start_decay, -1 / cfg.ema_timescale
        switch = spidr_switch_step(cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold)

        def spidr(step: jax.Array) -> tuple[jax.Array, jax.Array]:
            weight = jnp.float32(scale) * scaled_exp(rate, step)
            is_one = jnp.zeros(jnp.shape(step), dtype=bool) if switch is None else step >= switch
            return weight, is_one

        return spidr

    final_step, freeze_step = int(cfg.ema_final_step), int(cfg.freeze_step)
    final_weight = 1 - cfg.ema_final_decay
    slope = (cfg.ema_final_decay - cfg.ema_start_decay) / final_step if final_step else 0.0

    def dinosr(step: jax.Array) -> tuple[jax.Array, jax.Array]:
        # (F - step) is an exact integer, so the ramp keeps float32 relative precision in the weight.
        ramp = jnp.float32(final_weight) + jnp.float32(slope) * (final_step - step).astype(jnp.float32)
        weight = jnp.where(step < final_step, ramp, jnp.float32(final_weight))
        return weight, (step >= final_step) & (step >= freeze_step)

    return dinosr
