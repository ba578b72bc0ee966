"""Learning-rate and EMA-decay schedules against the reference's torch schedulers and EMA functions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from spidr.config import OptimizerConfig as TorchOptimizerConfig
from spidr.models.dinosr import ema_scheduler
from spidr.models.spidr import exp_ema_scheduler
from spidr.optimizer import build_scheduler

from spidr_jax.config.checks import check_optimizer
from spidr_jax.config.model import DinoSRConfig, SpidRConfig
from spidr_jax.config.run import OptimizerConfig
from spidr_jax.train.ema_schedule import ema_decay_schedule, ema_weight_schedule, spidr_switch_step
from spidr_jax.train.schedules import learning_rate_schedule, scaled_exp

LR_RTOL = 1e-6
SMALL = {"warmup_steps": 7, "hold_steps": 11, "decay_steps": 13, "max_steps": 40, "rsqrt_timescale": 5}
SCHEDULERS = ("tristage", "cosine", "rsqrt", "constant")


def reference_lrs(fields: dict, num_steps: int) -> np.ndarray:
    """`get_last_lr()[0]` before each of `num_steps` calls to `step()`, as the reference trainer reads it."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=fields.get("lr", TorchOptimizerConfig.lr))
    scheduler = build_scheduler(opt, TorchOptimizerConfig(**fields))
    opt.step()  # no gradient: a no-op that only tells the scheduler the optimizer runs first
    out = np.empty(num_steps)
    for t in range(num_steps):
        out[t] = scheduler.get_last_lr()[0]
        scheduler.step()
    return out


def our_lrs(fields: dict, num_steps: int) -> np.ndarray:
    schedule = jax.jit(learning_rate_schedule(OptimizerConfig(**fields)))
    values = schedule(jnp.arange(num_steps, dtype=jnp.int32))
    assert values.dtype == jnp.float32
    return np.asarray(values, np.float64)


def assert_lrs_match(fields: dict, num_steps: int) -> float:
    ref, ours = reference_lrs(fields, num_steps), our_lrs(fields, num_steps)
    # Relative error; values far below float32's normal range (a decay run for long enough) count as 1e-30.
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30)
    worst = int(np.argmax(rel))
    assert rel[worst] <= LR_RTOL, (worst, ref[worst], ours[worst], rel[worst])
    return float(rel.max())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_small_schedules_match_reference(scheduler):
    # 200 steps: past warmup + hold + decay, and several cosine half-periods past max_steps.
    assert_lrs_match({**SMALL, "scheduler": scheduler}, 200)


@pytest.mark.parametrize(
    "overrides",
    [
        {"warmup_steps": 0},
        {"hold_steps": 0},
        {"warmup_steps": 0, "hold_steps": 0},
        {"rsqrt_shift": 3},
        {"rsqrt_shift": 30, "hold_steps": 0},
        {"rsqrt_shift": 30, "warmup_steps": 0},
        {"final_lr_scale": 0.3},
        {"final_lr_scale": 1.0},
        {"init_lr_scale": 1.0},
        {"init_lr_scale": 0.5, "lr": 3e-3},
        {"max_steps": 10},  # max_steps < warmup + hold: a 3-step cosine
        {"max_steps": 4},  # max_steps < warmup: the cosine's T_max is negative
        {"warmup_steps": 1, "hold_steps": 1, "decay_steps": 1},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_edge_cases_match_reference(scheduler, overrides):
    assert_lrs_match({**SMALL, "scheduler": scheduler, **overrides}, 150)


def test_cosine_to_zero_matches_reference():
    assert_lrs_match({**SMALL, "scheduler": "cosine", "final_lr_scale": 0.0}, 150)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_default_schedules_match_reference_at_every_step(scheduler):
    # Every step of a default run (the reference steps in well under a second); the cosine also past max_steps.
    num_steps = 2 * 400_000 if scheduler == "cosine" else 400_000 + 1_000
    assert_lrs_match({"scheduler": scheduler}, num_steps)


def test_rsqrt_hold_restarts_from_base_rate():
    # The reference's hold phase starts from the base rate, not from where the shifted warmup ended.
    fields = {**SMALL, "scheduler": "rsqrt", "rsqrt_shift": 15}
    lrs = our_lrs(fields, 40)
    warmup, hold, lr = SMALL["warmup_steps"], SMALL["hold_steps"], 5e-4
    end = 1 / math.sqrt(1 + 15 / SMALL["rsqrt_timescale"])
    np.testing.assert_allclose(lrs[warmup - 1], lr * (0.01 + (end - 0.01) * (warmup - 1) / warmup), rtol=1e-6)
    np.testing.assert_allclose(lrs[warmup : warmup + hold], lr, rtol=1e-7)
    np.testing.assert_allclose(lrs[warmup + hold], lr * end, rtol=1e-6)


def test_tristage_keeps_decaying_past_decay_steps():
    lrs = our_lrs({**SMALL, "scheduler": "tristage", "final_lr_scale": 0.1}, 60)
    start = SMALL["warmup_steps"] + SMALL["hold_steps"]
    np.testing.assert_allclose(lrs[start + 13], 5e-5, rtol=1e-6)
    np.testing.assert_allclose(lrs[start + 26], 5e-6, rtol=1e-6)


def test_scalar_steps_and_optax():
    fields = {**SMALL, "scheduler": "tristage"}
    schedule = learning_rate_schedule(OptimizerConfig(**fields))
    ref = reference_lrs(fields, 40)
    jitted = jax.jit(schedule)
    for t in (0, 6, 7, 17, 18, 19, 39):
        np.testing.assert_allclose(float(jitted(jnp.int32(t))), ref[t], rtol=LR_RTOL)
        np.testing.assert_allclose(float(schedule(t)), ref[t], rtol=LR_RTOL)

    # As an optax schedule: the t-th update uses the value at count t.
    opt = optax.sgd(schedule)
    params = jnp.zeros((), jnp.float32)
    state = opt.init(params)
    update = jax.jit(lambda p, s: opt.update(jnp.ones((), jnp.float32), s, p))
    steps = []
    for _ in range(20):
        delta, state = update(params, state)
        steps.append(-float(delta))
    np.testing.assert_allclose(steps, ref[:20], rtol=LR_RTOL)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"scheduler": "cosine", "max_steps": 7}, "max_steps"),
        ({"scheduler": "tristage", "final_lr_scale": 0.0}, "final_lr_scale"),
        ({"scheduler": "tristage", "decay_steps": 0}, "decay_steps"),
        ({"scheduler": "rsqrt", "rsqrt_timescale": 0}, "rsqrt_timescale"),
        ({"init_lr_scale": 0.0}, "init_lr_scale"),
        ({"scheduler": "linear"}, "scheduler"),
    ],
)
def test_configs_on_which_the_reference_fails_are_rejected(fields, match):
    with pytest.raises(ValueError, match=match):
        check_optimizer(OptimizerConfig(**{**SMALL, **fields}))


@pytest.mark.parametrize("rate", [math.log(0.01) / 200_000, -1 / 20_000, math.log(1e-3) / 13, 3e-6])
def test_scaled_exp_is_accurate_in_float32(rate):
    steps = np.concatenate([np.arange(0, 1_000_000, 97), [2**20 - 1, 2**24 + 1, 10**8]]).astype(np.int32)
    ours = np.asarray(jax.jit(lambda k: scaled_exp(rate, k))(jnp.asarray(steps)), np.float64)
    exact = np.exp(rate * steps.astype(np.float64))
    keep = (exact > 1e-30) & (exact < 1e30)
    np.testing.assert_allclose(ours[keep], exact[keep], rtol=4e-7)


# --- EMA decay ---------------------------------------------------------------------------------------------------


def reference_decays(cfg: DinoSRConfig, steps: np.ndarray) -> np.ndarray:
    if isinstance(cfg, SpidRConfig):
        return np.array(
            [exp_ema_scheduler(int(s), cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold) for s in steps]
        )
    return np.array(
        [
            ema_scheduler(int(s), cfg.ema_start_decay, cfg.ema_final_decay, cfg.ema_final_step, cfg.freeze_step)
            for s in steps
        ]
    )


def assert_ema_matches(cfg: DinoSRConfig, steps: np.ndarray) -> tuple[float, float]:
    """Decay to float32 rounding and the lerp weight to 1e-6 relative; returns both max errors."""
    ref = reference_decays(cfg, steps)
    int_steps = jnp.asarray(steps, jnp.int32)
    decay = np.asarray(jax.jit(ema_decay_schedule(cfg))(int_steps), np.float64)
    weight = np.asarray(jax.jit(ema_weight_schedule(cfg))(int_steps), np.float64)
    # float32 rounds a decay within 3e-8 of 1 to 1, so the switch itself is checked on the weight below.
    assert np.all(decay[ref == 1] == 1)
    decay_err = np.abs(decay - ref).max()
    assert decay_err <= 1.2e-7, decay_err  # at most one float32 ulp near 1

    updates = (ref > 0) & (ref < 1)  # the reference lerps only then
    assert np.all(weight[~updates] == 0)
    assert np.all(weight[updates] > 0)
    ref_weight = 1 - ref[updates]
    # The reference's float64 `1 - decay` carries up to 2**-53 of absolute rounding (only visible below ~1e-9).
    excess = np.abs(weight[updates] - ref_weight) - 2.0**-52
    weight_err = (np.maximum(excess, 0) / ref_weight).max(initial=0.0)
    assert weight_err <= 1e-6, weight_err
    return float(decay_err), float(weight_err)


def test_dinosr_default_ema_at_every_step():
    cfg = DinoSRConfig()
    assert_ema_matches(cfg, np.arange(0, cfg.freeze_step + 5_000))
    decay = jax.jit(ema_decay_schedule(cfg))
    assert float(decay(jnp.int32(cfg.freeze_step - 1))) < 1
    assert float(decay(jnp.int32(cfg.freeze_step))) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"ema_final_step": 13, "freeze_step": 40},
        {"ema_final_step": 13, "freeze_step": 5},  # the ramp is checked first: no freeze before step 13
        {"ema_final_step": 0, "freeze_step": 9},
        {"ema_start_decay": 0.5, "ema_final_decay": 1.0, "ema_final_step": 20, "freeze_step": 30},
    ],
)
def test_dinosr_small_ema(fields):
    assert_ema_matches(DinoSRConfig(**fields), np.arange(0, 60))


def test_spidr_default_ema_at_every_step():
    cfg = SpidRConfig()
    switch = spidr_switch_step(cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold)
    assert switch is not None
    assert exp_ema_scheduler(switch, cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold) == 1
    assert exp_ema_scheduler(switch - 1, cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold) < 1
    assert_ema_matches(cfg, np.arange(0, switch + 5_000))
    assert_ema_matches(cfg, np.arange(switch - 3, switch + 3))
    weight = jax.jit(ema_weight_schedule(cfg))
    assert float(weight(jnp.int32(switch - 1))) > 0
    assert float(weight(jnp.int32(switch))) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"ema_start_decay": 0.9, "ema_timescale": 5.0, "ema_threshold": 1e-3},
        {"ema_start_decay": 0.99, "ema_timescale": 7.0, "ema_threshold": 1e-9},
        {"ema_start_decay": 0.999, "ema_timescale": 3.0, "ema_threshold": 0.0},  # switches once 1 - decay rounds to 0
        {"ema_start_decay": 0.999, "ema_timescale": 3.0, "ema_threshold": 1e-2},  # 1 from step 0
    ],
)
def test_spidr_small_ema_and_switch_step(fields):
    cfg = SpidRConfig(**fields)
    switch = spidr_switch_step(cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold)
    assert switch is not None
    steps = np.arange(0, switch + 50)
    ref = reference_decays(cfg, steps)
    assert int(np.argmax(ref == 1)) == switch
    assert np.all(ref[switch:] == 1)
    assert_ema_matches(cfg, steps)


def test_spidr_without_switch_in_int32_range():
    assert spidr_switch_step(0.999, 1e12, 0.0) is None
    cfg = SpidRConfig(ema_timescale=1e12, ema_threshold=0.0)
    assert_ema_matches(cfg, np.array([1, 10, 10**6, 2**31 - 1]))
