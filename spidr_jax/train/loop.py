"""The training run, top to bottom: runtime, workdir, input pipeline, train state, compiled step, loop.

Started by `python -m spidr_jax.train --config=...`. Restarting the same command resumes from the newest checkpoint
in `run.workdir` exactly (same step, optimizer, teacher, codebooks, RNG and data position).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from spidr_jax.config.run import Config
from spidr_jax.data.audio import SAMPLE_RATE, AudioError
from spidr_jax.data.load_batch import BAD_AUDIO
from spidr_jax.data.pipeline import TrainingData, validation_batches
from spidr_jax.data.scan import left_out_line
from spidr_jax.errors import UserError
from spidr_jax.progress import duration, is_terminal, make_progress
from spidr_jax.runtime import enable_compilation_cache, initialize_distributed
from spidr_jax.sharding import data_mesh, replicated
from spidr_jax.storage.run_lock import LockedError, RunLock
from spidr_jax.train.bad_audio import DecodeFailures, TooMuchBadAudioError, report_scan_problems
from spidr_jax.train.checkpoints import RunCheckpoints
from spidr_jax.train.config_history import record_start
from spidr_jax.train.evaluation import eval_step_function, validate_set
from spidr_jax.train.initial_state import initial_train_state
from spidr_jax.train.signals import StopSignals
from spidr_jax.train.step import StepDefinition, compile_train_step
from spidr_jax.train.step_executables import StepExecutables
from spidr_jax.train.steps_in_flight import StepsInFlight
from spidr_jax.train.tensorboard import MetricAverages, MetricsWriter
from spidr_jax.train.units_report import UnitsMonitor
from spidr_jax.train.workdir import abstract_batches, global_batch, local_workdir, prepare_workdir

LOCK_FILE = "run.lock"  # held by the run: one training per workdir
CROP_WARNING = 0.15  # above this fraction of the audio cropped to the bucket lengths, the start says so
SAVE_CHECK_INTERVAL = 10  # steps between two checks for a failed asynchronous checkpoint save


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving."""


@dataclass
class RunResult:
    """What a finished (or stopped) run did."""

    start_step: int
    final_step: int
    losses: dict[int, float] = field(default_factory=dict)  # logged averages, by step
    stopped_by_signal: int | None = None


def train(cfg: Config, *, progress: bool = True) -> RunResult:
    """Train until `optimizer.max_steps` (or a stop signal), logging, validating and checkpointing on the way."""
    with hold_workdir(cfg.run.workdir):
        run = TrainingRun(cfg, progress=progress)
        try:
            return run.loop()
        finally:
            run.close()  # pending checkpoint saves complete even when the run stops on an error


@contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
    """Process 0 holds the workdir's lock for the run; every process fails alike when another run holds it."""
    initialize_distributed()
    lock = (
        RunLock(local_workdir(workdir), LOCK_FILE, what="training", instead="another run.workdir")
        if jax.process_index() == 0
        else None
    )
    refusal = ""
    if lock is not None:
        try:
            lock.__enter__()
        except LockedError as error:
            refusal, lock = str(error), None
    if jax.process_count() > 1:
        refused = multihost_utils.broadcast_one_to_all(np.int32(bool(refusal)))
        if int(refused) and not refusal:
            refusal = f"{workdir} is in use by another training (see the log of process 0)"
    if refusal:
        raise LockedError(refusal)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


class TrainingRun:
    """One run: everything set up in `__init__`, then `loop()`; `close()` finishes saves and logs."""

    def __init__(self, cfg: Config, *, progress: bool) -> None:
        self.cfg = cfg
        # ---- runtime: processes, devices, mesh --------------------------------------------------------------
        initialize_distributed()
        enable_compilation_cache()
        self.mesh: Mesh = data_mesh()
        self.is_main = jax.process_index() == 0
        self.progress = progress and self.is_main
        self.say: Callable[[str], None] = print if self.is_main else (lambda _: None)
        self.workdir: Path = prepare_workdir(cfg, write=self.is_main, say=self.say)
        self.say(f"workdir: {self.workdir}  ({self.mesh.size} devices, {jax.process_count()} processes)")

        # ---- input pipeline -----------------------------------------------------------------------------------
        self.data = TrainingData(
            cfg.data, cfg.masking, cfg.model, seed=cfg.data.random_seed, num_data_shards=self.mesh.size,
            progress=self.is_main,
        )  # fmt: skip
        report_scan_problems(self.data.scan, self.data.min_samples, self.workdir, self.say, write=self.is_main)
        self.decode_failures = DecodeFailures(self.workdir, cfg.data.max_bad_fraction, self.say)
        self.say(self.data.buckets.describe())
        if self.data.buckets.crop_fraction > CROP_WARNING:
            self.say(
                f"warning: {self.data.buckets.crop_fraction:.0%} of the audio is cropped away to the bucket lengths; "
                "raise data.num_static_shapes"
                + ("" if cfg.data.enable_padding else " or set data.enable_padding=true")
                + " to keep more of it"
            )
        self.validation = {
            name: validation_batches(
                val_cfg,
                cfg.masking,
                cfg.model,
                seed=cfg.data.random_seed,
                num_data_shards=self.mesh.size,
                progress=self.is_main,
            )
            for name, val_cfg in cfg.validation.items()
        }
        for name, val_data in self.validation.items():
            left_out = left_out_line(val_data.scan, val_data.min_samples)
            if left_out:
                self.say(f"warning: validation.{name}: {left_out}")
        self.units_monitor = UnitsMonitor(cfg.validation, cfg.model)

        # ---- model, optimizer and train state: resumed, converted (run.init_ckpt) or fresh ----------------
        self.checkpoints = RunCheckpoints(self.workdir, keep_latest=cfg.run.keep_latest)
        self.split, self.state, origin = initial_train_state(cfg, self.mesh, self.checkpoints)
        self.start_step = int(jax.device_get(self.state.step))
        self.say(f"train state: {origin}, step {self.start_step}")
        if self.is_main:
            record_start(cfg, self.workdir, self.start_step)
        if self.start_step >= cfg.optimizer.max_steps:
            self.say(
                f"the checkpoint is at step {self.start_step}, not below optimizer.max_steps "
                f"({cfg.optimizer.max_steps}): nothing to train (raise optimizer.max_steps to continue)"
            )

        # ---- the compiled step, one executable per batch shape, compiled before the loop ------------------
        definition = StepDefinition(self.split, cfg.model, cfg.optimizer, self.mesh)
        self.step_fn = StepExecutables(compile_train_step(definition, replicated(self.mesh, self.state)))
        if self.start_step < cfg.optimizer.max_steps:
            self.compile_ahead(extractor_frozen=self.start_step >= cfg.model.freeze_step)
        self.evaluate = eval_step_function(self.split, self.mesh)

        # ---- logging -----------------------------------------------------------------------------------------
        self.writer = MetricsWriter(self.workdir / "tensorboard", enabled=self.is_main)
        self.averages = MetricAverages()
        self.interval_steps: list[int] = []  # the steps of the metrics in `averages`, in order

    def compile_ahead(self, *, extractor_frozen: bool) -> None:
        """Compile the step for every batch shape of the data (concurrently), with a progress bar."""
        batches = self.abstract_batches()
        with make_progress(disable=not self.progress) as bar:
            task = bar.add_task("compiling", total=len(batches), status="")
            self.step_fn.compile(
                self.state, batches, extractor_frozen=extractor_frozen, on_compiled=lambda: bar.advance(task)
            )

    def abstract_batches(self) -> list[dict[str, jax.ShapeDtypeStruct]]:
        """The shapes (and shardings) of the data's batches, one entry per batch shape."""
        return abstract_batches(self.cfg, self.data.shapes, self.data.frames, self.mesh)

    def save_and_validate(self, step: int) -> None:
        """Checkpoint (asynchronously), then score every validation set."""
        meta = {"step": step, "data_seed": self.cfg.data.random_seed}
        self.checkpoints.save(self.state, meta)
        state = self.state
        for name, val_data in self.validation.items():
            try:
                result = validate_set(self.evaluate, state, val_data, self.mesh)
            except UserError as error:  # e.g. a set whose files became unreadable: the training goes on
                self.say(f"warning: validation {name} at step {step} failed: {error}")
                continue
            self.writer.scalars(name, result.values, step)
            self.say(result.describe(name, step))
        if self.units_monitor.sets:
            model = self.split.merge(state.params, state.teacher, state.codebooks)
            try:
                self.units_monitor.evaluate(model, step, self.writer)
            except UserError as error:
                self.say(f"warning: units quality at step {step} failed: {error}")

    def loop(self) -> RunResult:
        """Train from the current step to `optimizer.max_steps`."""
        cfg, result = self.cfg, RunResult(start_step=self.start_step, final_step=self.start_step)
        if self.checkpoints.latest_step() is None:
            self.save_and_validate(0)  # as the reference: the initial weights are a checkpoint too
        max_steps = cfg.optimizer.max_steps
        interval_start = (time.perf_counter(), self.start_step)
        with (
            StopSignals() as signals,
            self.data.iterator(self.start_step) as batches,
            make_progress(disable=not self.progress or not is_terminal()) as bar,  # in a log: `log_line`s
        ):
            task = bar.add_task("training", total=max_steps, completed=self.start_step, status="")
            in_flight = StepsInFlight()  # the next batch goes to the devices while they compute this step
            for step, host_batch in read_batches(batches):
                if step >= max_steps:
                    break
                self.decode_failures.add(step, len(host_batch["waveforms"]), host_batch.get(BAD_AUDIO))
                batch = global_batch(host_batch, self.mesh)
                metrics = self.train_step(step, batch)
                in_flight.dispatched(metrics["loss"])
                rows, samples = batch["waveforms"].shape
                self.averages.add(metrics | {"batch_size": rows, "audio_seconds": rows * samples / SAMPLE_RATE})
                self.interval_steps.append(step)
                done = result.final_step = step + 1
                bar.advance(task)
                signals.poll(done)
                if done % SAVE_CHECK_INTERVAL == 0:
                    self.checkpoints.check_for_errors()  # a failed asynchronous save stops the run within steps
                if done % cfg.run.log_interval == 0 or done == max_steps:
                    values = self.log_interval(interval_start, done)
                    interval_start = (time.perf_counter(), done)
                    result.losses[done] = values["loss"]
                    bar.update(task, status=progress_status(values))
                    if self.progress and not is_terminal():
                        print(log_line(values, done, max_steps), flush=True)
                if done % cfg.run.save_interval == 0 or done == max_steps or signals.received:
                    self.check_finite()
                    self.save_and_validate(done)
                if signals.received:
                    result.stopped_by_signal = signals.received
                    self.say(f"received signal {signals.received}: saved a checkpoint at step {done}, stopping")
                    break
        self.close()
        if self.units_monitor.sets:
            self.say(self.units_monitor.report(self.workdir, result.final_step, baseline_k=cfg.model.codebook_size))
        self.say(f"done: step {result.final_step}")
        return result

    def train_step(self, step: int, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """One optimizer step on the state; at `model.freeze_step`, first compile the second phase's shapes."""
        freeze_step = self.cfg.model.freeze_step
        if step == freeze_step and step > self.start_step:
            self.say(f"step {step}: the extractor freezes; compiling its step for {len(self.data.shapes)} shapes")
            self.step_fn.compile(self.state, self.abstract_batches(), extractor_frozen=True)
        self.state, metrics = self.step_fn(self.state, batch, extractor_frozen=step >= freeze_step)
        return metrics

    def log_interval(self, interval_start: tuple[float, int], done: int) -> dict[str, float]:
        """Average the metrics since the last log, check them, and write them to TensorBoard."""
        bad_audio = self.decode_failures.check()
        self.check_finite()
        values = interval_values(self.averages.pop(), interval_start, done) | {"bad_audio": bad_audio}
        self.interval_steps = []
        self.writer.scalars("train", values, done)
        return values

    def check_finite(self) -> None:
        """Raise NonFiniteLossError naming the first step since the last log whose loss is not finite, and its rows."""
        position = self.averages.first_non_finite("loss")
        if position is not None:
            step = self.interval_steps[position]
            raise NonFiniteLossError(non_finite_message(step, self.checkpoints, self.data.row_locations(step)))

    def close(self) -> None:
        """Wait for pending checkpoint saves and flush the logs (safe to call twice)."""
        self.checkpoints.close()
        self.writer.close()


def read_batches(batches: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
    """The batches, with a slot whose row and all stand-ins failed to decode turned into one clear error."""
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except AudioError as error:
            raise TooMuchBadAudioError(f"{error}; the storage of the audio may be unreadable") from error


def interval_values(means: dict[str, float], interval_start: tuple[float, int], done: int) -> dict[str, float]:
    """Averages since the last log plus speed; ema_decay is logged x1000, as the reference logs it."""
    started, first = interval_start
    seconds_per_step = (time.perf_counter() - started) / max(done - first, 1)
    values = dict(means)
    values["step_time"] = seconds_per_step
    values["audio_seconds_per_second"] = values.pop("audio_seconds") / seconds_per_step
    values["ema_decay"] = values["ema_decay"] * 1000
    return values


def progress_status(values: dict[str, float]) -> str:
    """The progress bar's text."""
    return f"loss {values['loss']:.3f}  target ppl {values['target_ppl']:.1f}  pred ppl {values['pred_ppl']:.1f}"


def log_line(values: dict[str, float], done: int, max_steps: int) -> str:
    """What a log file gets every `run.log_interval` steps (where no bar is drawn)."""
    eta = duration((max_steps - done) * values["step_time"])
    return (
        f"step {done}/{max_steps}: loss {values['loss']:.4f}, target ppl {values['target_ppl']:.1f}, "
        f"pred ppl {values['pred_ppl']:.1f}, lr {values['lr']:.3g}, grad norm {values['grad_norm']:.3g}, "
        f"{values['audio_seconds_per_second']:.0f} audio s/s, ETA {eta}"
    )


def non_finite_message(step: int, checkpoints: RunCheckpoints, rows: list[str], shown: int = 8) -> str:
    """The one line explaining the stop: the step (counted from 1), the rows of its batch, the checkpoint kept."""
    last = checkpoints.latest_step()
    kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
    listed = ", ".join(rows[:shown]) + (f" and {len(rows) - shown} more" if len(rows) > shown else "")
    return f"the loss is not finite at step {step + 1} (its batch: {listed}); stopping without saving ({kept})"
