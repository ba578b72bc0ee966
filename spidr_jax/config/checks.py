"""Every rule a config's values must follow, each checked once, when the config is loaded.

The rules of each section are public functions (`check_data`, `check_optimizer`, ...) so that a section built in
Python can be checked alone; `check_config` applies them all. A broken rule raises `ConfigError` naming the field,
its value and the condition.
"""

from __future__ import annotations

import math
import typing

from spidr_jax.config.model import ConfigError, DinoSRConfig, SpidRConfig
from spidr_jax.config.run import (
    Config,
    DataConfig,
    MaskingConfig,
    MaskingStrategy,
    OptimizerConfig,
    RunConfig,
    Scheduler,
)

SCHEDULERS = typing.get_args(Scheduler)
MASK_SELECTIONS = typing.get_args(MaskingStrategy)


def check_config(cfg: Config) -> None:
    """Raise `ConfigError` naming the first field whose value is out of range or inconsistent with another."""
    check_run(cfg.run)
    check_data(cfg.data, "data")
    for name, entry in cfg.validation.items():
        check_data(entry, f"validation.{name}")
    check_optimizer(cfg.optimizer)
    for prefix in ("mask", "mask_channel"):
        check_masking(cfg.masking, prefix)
    check_model_schedules(cfg.model)


def check_run(run: RunConfig) -> None:
    """Logging and checkpoint intervals."""
    _require(run.log_interval > 0, "run.log_interval", run.log_interval, "must be positive")
    _require(run.save_interval > 0, "run.save_interval", run.save_interval, "must be positive")


def check_data(data: DataConfig, prefix: str = "data") -> None:
    """Length limits and loader settings of one data section (`data` or `validation.NAME`).

    As in the reference, `min_sample_size` may be 0 (no file is too short for the filter; files too short for one
    frame of the model are still left out, and said so).
    """
    _require(data.min_sample_size >= 0, f"{prefix}.min_sample_size", data.min_sample_size, "must be >= 0")
    _require(data.max_sample_size > 0, f"{prefix}.max_sample_size", data.max_sample_size, "must be positive")
    if data.min_sample_size > data.max_sample_size:
        raise ConfigError(
            f"{prefix}.min_sample_size ({data.min_sample_size}) must be <= "
            f"{prefix}.max_sample_size ({data.max_sample_size})"
        )
    if data.max_batch_length < data.max_sample_size:
        raise ConfigError(
            f"{prefix}.max_batch_length ({data.max_batch_length}) must be >= "
            f"{prefix}.max_sample_size ({data.max_sample_size})"
        )
    _require(data.num_buckets > 0, f"{prefix}.num_buckets", data.num_buckets, "must be positive")
    _require(data.num_static_shapes > 0, f"{prefix}.num_static_shapes", data.num_static_shapes, "must be positive")
    _require(data.num_workers >= 0, f"{prefix}.num_workers", data.num_workers, "must be >= 0")
    fraction = data.max_bad_fraction
    _require(0 <= fraction <= 1, f"{prefix}.max_bad_fraction", fraction, "must lie in [0, 1]")
    _require(data.prefetch_factor > 0, f"{prefix}.prefetch_factor", data.prefetch_factor, "must be positive")


def check_optimizer(opt: OptimizerConfig) -> None:
    """AdamW's settings, and those on which the reference's learning-rate scheduler fails (at build or later)."""
    _require(opt.lr > 0, "optimizer.lr", opt.lr, "must be positive")
    for i, beta in enumerate(opt.betas):
        _require(0 <= beta < 1, f"optimizer.betas[{i}]", beta, "must be in [0, 1)")
    _require(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "must be >= 0")
    _require(opt.eps > 0, "optimizer.eps", opt.eps, "must be positive")
    _require(opt.max_norm > 0, "optimizer.max_norm", opt.max_norm, "must be positive")
    _require(opt.scheduler in SCHEDULERS, "optimizer.scheduler", opt.scheduler, f"must be one of {SCHEDULERS}")
    # torch's LinearLR (the reference's warmup) only accepts a start factor in (0, 1].
    _require(0 < opt.init_lr_scale <= 1, "optimizer.init_lr_scale", opt.init_lr_scale, "must be in (0, 1]")
    _require(opt.final_lr_scale >= 0, "optimizer.final_lr_scale", opt.final_lr_scale, "must be >= 0")
    _require(opt.max_steps > 0, "optimizer.max_steps", opt.max_steps, "must be positive")
    for name in ("warmup_steps", "hold_steps", "rsqrt_shift"):
        _require(getattr(opt, name) >= 0, f"optimizer.{name}", getattr(opt, name), "must be >= 0")
    if opt.scheduler == "tristage":
        # The decay phase is lr * final_lr_scale ** (k / decay_steps).
        _require(opt.decay_steps > 0, "optimizer.decay_steps", opt.decay_steps, "must be positive for tristage")
        scale = opt.final_lr_scale
        _require(scale > 0, "optimizer.final_lr_scale", scale, "must be positive for tristage")
    if opt.scheduler == "rsqrt":
        _require(opt.rsqrt_timescale > 0, "optimizer.rsqrt_timescale", opt.rsqrt_timescale, "must be positive")
    if opt.scheduler == "cosine":
        # The reference's cosine phase divides by max_steps - warmup_steps.
        steps = opt.max_steps
        _require(steps != opt.warmup_steps, "optimizer.max_steps", steps, "must differ from optimizer.warmup_steps")


def check_masking(masking: MaskingConfig, prefix: str) -> None:
    """The span settings of time (`mask_*`) or channel (`mask_channel_*`) masking."""
    prob, length = getattr(masking, f"{prefix}_prob"), getattr(masking, f"{prefix}_length")
    selection, choices = getattr(masking, f"{prefix}_selection"), MASK_SELECTIONS
    _require(selection in choices, f"masking.{prefix}_selection", selection, f"must be one of {choices}")
    # Like the reference, a probability above 1 is allowed: it only draws more (overlapping) spans.
    _require(0 <= prob < math.inf, f"masking.{prefix}_prob", prob, "must be a finite number >= 0")
    _require(length >= 1, f"masking.{prefix}_length", length, "must be >= 1")
    space = getattr(masking, f"{prefix}_min_space")
    _require(space >= 0, f"masking.{prefix}_min_space", space, "must be >= 0")
    other = getattr(masking, f"{prefix}_other")
    if selection in {"uniform", "normal"}:
        # uniform: the shortest span length; normal: the standard deviation of the span length.
        _require(0 <= other < math.inf, f"masking.{prefix}_other", other, f"must be >= 0 for {selection!r}")
    if selection == "uniform" and int(other) > 2 * length:
        raise ConfigError(
            f"masking.{prefix}_other ({other}) must be <= 2 * masking.{prefix}_length ({2 * length}) for 'uniform'"
        )


def check_model_schedules(model: DinoSRConfig) -> None:
    """The EMA settings of the teacher and the codebooks (the architecture is checked by the model config)."""
    if isinstance(model, SpidRConfig):
        _require(model.ema_timescale > 0, "model.ema_timescale", model.ema_timescale, "must be positive")
    _require(0 <= model.ema_start_decay <= 1, "model.ema_start_decay", model.ema_start_decay, "must be in [0, 1]")
    _require(0 <= model.codebook_decay <= 1, "model.codebook_decay", model.codebook_decay, "must be in [0, 1]")


def _require(ok: bool, name: str, value: object, condition: str) -> None:
    """Raise `ConfigError("<name> <condition>, got <value>")` unless `ok`."""
    if not ok:
        text = " ".join(repr(value).split())
        raise ConfigError(f"{name} {condition}, got {text if len(text) <= 80 else text[:77] + '...'}")
