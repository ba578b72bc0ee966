"""Learning-rate schedules of the reference trainer, as jit-able functions of the optimizer step.

`learning_rate_schedule(cfg)(t)` is the learning rate used by the t-th optimizer update (t = 0, 1, ...), i.e. the
value the reference's `SequentialLR` reports after `t` calls to `step()`. It takes a traced int32 step and doubles
as an optax schedule.

The reference chains one scheduler per phase; at each milestone the next phase restarts from its own closed form at
local step 0. Phase boundaries are integers fixed on the host, so the traced function switches at exactly the same
step. The chained (recursive) updates of the reference agree with the closed forms used here to well below float32
precision, so the closed forms are evaluated directly, in float32, arranged so that no step loses precision:

- tristage: `lr * init_lr_scale` rising linearly to `lr` over `warmup_steps`, `lr` for `hold_steps`, then
  `lr * final_lr_scale ** (k / decay_steps)` at decay step k, which keeps decaying past `decay_steps`.
- cosine: the same warmup, then `eta_min + (lr - eta_min) * (1 + cos(pi * k / T)) / 2` with
  `T = max_steps - warmup_steps` and `eta_min = final_lr_scale * lr`; past `T` it rises again (the reference has no
  restarts, its cosine just keeps its period `2T`).
- rsqrt: warmup to `lr / sqrt(1 + rsqrt_shift / rsqrt_timescale)`, then `lr` itself for `hold_steps` (the hold
  phase restarts from the base rate, so a positive shift makes the rate jump up), then
  `lr / sqrt(1 + (k + rsqrt_shift) / rsqrt_timescale)`.
- constant: the same warmup, then `lr`.

With `warmup_steps == 0` the warmup phase is skipped (and `init_lr_scale` is ignored); a zero-length hold phase is
skipped too. All phases are defined for every step, so values past `max_steps` follow the formulas above.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from spidr_jax.config.run import OptimizerConfig

Schedule = Callable[[jax.Array | int], jax.Array]
_Phase = Callable[[jax.Array], jax.Array]  # int32 step within the phase -> float32 value


def learning_rate_schedule(cfg: OptimizerConfig) -> Schedule:
    """The learning rate of the t-th optimizer update (t = 0, 1, ...), as a jit-able function of an int32 step.

    The config's values are checked when it is loaded (`spidr_jax.config.checks.check_optimizer`).
    """
    base = float(cfg.lr)
    warmup, hold = int(cfg.warmup_steps), int(cfg.hold_steps)
    # The reference ignores init_lr_scale without warmup.
    start = float(cfg.init_lr_scale) if warmup > 0 else 1.0

    phases: list[tuple[int, _Phase]]
    if cfg.scheduler == "tristage":
        rate = math.log(cfg.final_lr_scale) / cfg.decay_steps
        phases = [
            (0, _linear(base, start, 1.0, warmup)),
            (warmup, _constant(base)),
            (warmup + hold, lambda k: base * scaled_exp(rate, k)),
        ]
    elif cfg.scheduler == "cosine":
        phases = [
            (0, _linear(base, start, 1.0, warmup)),
            (warmup, _cosine(base, cfg.final_lr_scale * base, cfg.max_steps - warmup)),
        ]
    elif cfg.scheduler == "rsqrt":
        timescale, shift = float(cfg.rsqrt_timescale), float(cfg.rsqrt_shift)
        phases = [
            (0, _linear(base, start, 1 / math.sqrt(1 + shift / timescale), warmup)),
            (warmup, _constant(base)),
            (warmup + hold, _rsqrt(base, timescale, shift)),
        ]
    else:  # "constant" (checked above)
        phases = [(0, _linear(base, start, 1.0, warmup)), (warmup, _constant(base))]
    return _sequential(phases)


def scaled_exp(rate: float, step: jax.Array | int) -> jax.Array:
    """`exp(rate * step)` in float32 for an integer step, accurate to about 1e-7 relative.

    A plain float32 product `rate * step` is off by up to 2**-24 * |rate * step| in the exponent, i.e. up to 5e-7
    relative once the result is down to exp(-9). Here `rate` is split on the host into an 8-bit head and a tail, and
    the step into 16-bit halves, so the head products are exact; the exponent is then carried as a float32 pair.
    """
    frac, exponent = math.frexp(rate)
    rate_hi = math.ldexp(round(frac * 256), exponent - 8)
    rate_lo = rate - rate_hi
    k = jnp.asarray(step, dtype=jnp.int32)
    k_hi = k & jnp.int32(-(1 << 16))
    k_lo = k - k_hi
    p_hi = jnp.float32(rate_hi) * k_hi.astype(jnp.float32)  # <= 8 x 16 significant bits: exact
    p_lo = jnp.float32(rate_hi) * k_lo.astype(jnp.float32)  # idem
    head, err = _two_sum(p_hi, p_lo)
    tail = err + jnp.float32(rate_lo) * k.astype(jnp.float32)
    head, err = _two_sum(head, tail)
    return jnp.exp(head) * (1 + err)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`a + b` rounded, and the rounding error (Knuth's branch-free TwoSum)."""
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    return s, (a - a_virtual) + (b - b_virtual)


def _sequential(phases: list[tuple[int, _Phase]]) -> Schedule:
    """Chain phases that start at the given steps; each phase sees the step count since its own start.

    Like the reference, the phase in force at step t is the last one starting at or before t, so a phase that
    starts where the next one starts never runs (and is not built into the graph).
    """
    kept = [(begin, fn) for i, (begin, fn) in enumerate(phases) if i + 1 == len(phases) or begin < phases[i + 1][0]]

    def schedule(step: jax.Array | int) -> jax.Array:
        t = jnp.asarray(step, dtype=jnp.int32)
        value = kept[0][1](t - kept[0][0])
        for begin, fn in kept[1:]:
            value = jnp.where(t >= begin, fn(t - begin), value)
        return value.astype(jnp.float32)

    return schedule


def _constant(value: float) -> _Phase:
    """A phase that keeps one value."""
    return lambda k: jnp.full(jnp.shape(k), value, dtype=jnp.float32)


def _linear(base: float, start: float, end: float, steps: int) -> _Phase:
    """`base * (start + (end - start) * k / steps)`: the linear warmup (only used while k < steps)."""
    if steps <= 0:
        return _constant(base * start)
    offset, slope = base * start, base * (end - start) / steps
    return lambda k: jnp.float32(offset) + jnp.float32(slope) * k.astype(jnp.float32)


def _cosine(base: float, eta_min: float, period: int) -> _Phase:
    """`eta_min + (base - eta_min) * (1 + cos(pi * k / T)) / 2`, periodic in k with period 2T."""
    half = abs(period)  # the reference's recursion treats a negative T like |T|
    scale = math.pi / (2 * half)

    def phase(k: jax.Array) -> jax.Array:
        # (1 + cos(pi m / T)) / 2 == sin(pi (T - m) / (2T))**2: with the exact integer T - m the sine keeps its
        # relative precision near the minimum, where a float32 cosine would lose it.
        m = jnp.remainder(k, 2 * half)
        s = jnp.sin((half - m).astype(jnp.float32) * jnp.float32(scale))
        return jnp.float32(eta_min) + jnp.float32(base - eta_min) * s * s

    return phase


def _rsqrt(base: float, timescale: float, shift: float) -> _Phase:
    """`base / sqrt(1 + (k + shift) / timescale)`, written as `base * sqrt(ts) / sqrt(ts + shift + k)`."""
    numerator, offset = base * math.sqrt(timescale), timescale + shift
    # ts + shift + k is an exact float32 integer for any realistic step: one correctly rounded sqrt and division.
    return lambda k: jnp.float32(numerator) / jnp.sqrt(k.astype(jnp.float32) + jnp.float32(offset))
