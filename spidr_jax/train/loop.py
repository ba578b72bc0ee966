"""The training run, top to bottom: runtime, workdir, input pipeline, train state, compiled step, loop.

Started by `python -m spidr_jax.train --config=...`. Restarting the same command resumes from the newest checkpoint
in `run.workdir` exactly (same step, optimizer, teacher, codebooks, RNG and data position).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import jax

from spidr_jax.config.run import Config
from spidr_jax.data.audio import SAMPLE_RATE
from spidr_jax.data.pipeline import TrainingData, validation_batches
from spidr_jax.progress import make_progress
from spidr_jax.sharding import data_mesh
from spidr_jax.train.checkpoints import RunCheckpoints
from spidr_jax.train.evaluation import eval_step_function, validate
from spidr_jax.train.initial_state import initial_train_state, state_sharding
from spidr_jax.train.runtime import enable_compilation_cache, initialize_distributed
from spidr_jax.train.signals import StopSignals
from spidr_jax.train.step import StepDefinition, compile_train_step
from spidr_jax.train.tensorboard import MetricAverages, MetricsWriter
from spidr_jax.train.units_report import UnitsMonitor
from spidr_jax.train.workdir import abstract_batch, global_batch, prepare_workdir, report_bad_audio

logger = logging.getLogger("spidr_jax.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving."""


@dataclass
class RunResult:
    """What a finished (or stopped) run did."""

    start_step: int
    final_step: int
    losses: dict[int, float] = field(default_factory=dict)  # logged averages, by step
    stopped_by_signal: int | None = None


def train(cfg: Config, *, progress: bool = True) -> RunResult:  # noqa: C901, PLR0915 (the run, read top to bottom)
    """Train until `optimizer.max_steps` (or a stop signal), logging, validating and checkpointing on the way."""
    # ---- runtime: processes, devices, mesh ------------------------------------------------------------------
    initialize_distributed()
    enable_compilation_cache()
    mesh = data_mesh()
    is_main = jax.process_index() == 0
    workdir = prepare_workdir(cfg, write=is_main)
    say = print if is_main else (lambda *_: None)
    say(f"workdir: {workdir}  ({mesh.size} devices, {jax.process_count()} processes)")

    # ---- input pipeline ---------------------------------------------------------------------------------------
    data = TrainingData(
        cfg.data, cfg.masking, cfg.model, seed=cfg.data.random_seed, num_data_shards=mesh.size, progress=is_main
    )
    report_bad_audio(data.scan, workdir, say, write=is_main)
    say(data.buckets.describe())
    validation = {
        name: validation_batches(
            val_cfg, cfg.masking, cfg.model, seed=cfg.data.random_seed, num_data_shards=mesh.size, progress=is_main
        )
        for name, val_cfg in cfg.validation.items()
    }

    # ---- model, optimizer and train state: resumed, converted (run.init_ckpt) or fresh --------------------
    checkpoints = RunCheckpoints(workdir, keep_latest=cfg.run.keep_latest)
    split, state, origin = initial_train_state(cfg, mesh, checkpoints)
    start_step = int(jax.device_get(state.step))
    say(f"train state: {origin}, step {start_step}")

    # ---- the compiled step, one executable per batch shape (compiled ahead of the loop) --------------------
    step_fn = compile_train_step(StepDefinition(split, cfg.model, cfg.optimizer, mesh), state_sharding(state, mesh))
    frozen = start_step >= cfg.model.freeze_step
    channels = cfg.model.encoder_embed_dim if cfg.masking.mask_channel_prob > 0 else None
    with make_progress(disable=not (progress and is_main)) as bar:
        task = bar.add_task("compiling", total=len(data.shapes), status="")
        for batch_size, samples in data.shapes:
            shapes = abstract_batch(batch_size, samples, data.frames[samples], mesh, channels=channels)
            step_fn.lower(state, shapes, extractor_frozen=frozen).compile()
            bar.advance(task)
    evaluate = eval_step_function(split, mesh)
    units_monitor = UnitsMonitor(cfg.validation)

    # ---- logging ------------------------------------------------------------------------------------------
    writer = MetricsWriter(workdir / "tensorboard", enabled=is_main)
    averages = MetricAverages()
    result = RunResult(start_step=start_step, final_step=start_step)
    meta = {"data_seed": cfg.data.random_seed, "batches_per_epoch": data.batches_per_epoch}

    def save_and_validate(step: int) -> None:
        checkpoints.save(state, meta | {"step": step})
        for name, val_data in validation.items():
            with val_data.iterator(0, val_data.num_batches) as batches:
                values = validate(
                    evaluate, state.params, state.teacher, state.codebooks,
                    (global_batch(b, mesh) for _, b in batches),
                )  # fmt: skip
            writer.scalars(name, values, step)
            say(f"validation {name} at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if units_monitor.sets:
            units_monitor.evaluate(split.merge(state.params, state.teacher, state.codebooks), step, writer)

    if start_step == 0:
        save_and_validate(0)  # as the reference: the initial weights are a checkpoint too

    # ---- the loop -----------------------------------------------------------------------------------------
    max_steps = cfg.optimizer.max_steps
    interval_start = (time.perf_counter(), start_step)
    with (
        StopSignals() as signals,
        data.iterator(start_step) as batches,
        make_progress(disable=not (progress and is_main)) as bar,
    ):
        task = bar.add_task("training", total=max_steps, completed=start_step, status="")
        for step, host_batch in batches:
            if step >= max_steps:
                break
            batch = global_batch(host_batch, mesh)
            state, metrics = step_fn(state, batch, extractor_frozen=step >= cfg.model.freeze_step)
            rows, samples = batch["waveforms"].shape
            averages.add(metrics | {"batch_size": rows, "audio_seconds": rows * samples / SAMPLE_RATE})
            done = result.final_step = step + 1
            bar.advance(task)
            if done % cfg.run.log_interval == 0 or done == max_steps:
                values = interval_values(averages.pop(), interval_start, done)
                interval_start = (time.perf_counter(), done)
                if not math.isfinite(values["loss"]):
                    raise NonFiniteLossError(non_finite_message(done, checkpoints))
                writer.scalars("train", values, done)
                result.losses[done] = values["loss"]
                status = f"loss {values['loss']:.3f}  ppl {values['target_ppl']:.1f}/{values['pred_ppl']:.1f}"
                bar.update(task, status=status)
            if done % cfg.run.save_interval == 0 or done == max_steps or signals.received:
                if not averages.all_finite():
                    raise NonFiniteLossError(non_finite_message(done, checkpoints))
                save_and_validate(done)
            if signals.received:
                result.stopped_by_signal = signals.received
                say(f"received signal {signals.received}: saved a checkpoint at step {done}, stopping")
                break
    checkpoints.close()
    writer.close()
    if units_monitor.sets:
        say(units_monitor.report(workdir, result.final_step))
    say(f"done: step {result.final_step}")
    return result


def interval_values(means: dict[str, float], interval_start: tuple[float, int], done: int) -> dict[str, float]:
    """Averages since the last log plus speed; ema_decay is logged x1000, as the reference logs it."""
    started, first = interval_start
    seconds_per_step = (time.perf_counter() - started) / max(done - first, 1)
    values = dict(means)
    values["step_time"] = seconds_per_step
    values["audio_seconds_per_second"] = values.pop("audio_seconds") / seconds_per_step
    values["ema_decay"] = values["ema_decay"] * 1000
    return values


def non_finite_message(step: int, checkpoints: RunCheckpoints) -> str:
    """The one line explaining the stop."""
    last = checkpoints.latest_step()
    kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
    return f"the loss is not finite at step {step}; stopping without saving ({kept})"
