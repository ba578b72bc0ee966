"""The GPU comparison in at most 8 minutes from a bare machine: `python -m bench.suite --gpu [--cpu-smoke] [DIR]`.

Each part runs as a process in its own process group, under its own time limit (the group is sent SIGTERM at the
limit and SIGKILL 5 s later: compiler workers included), its output streamed to the console and kept in
`DIR/PART.log`, in this order:
  setup         `bash bench/gpu.sh --setup`: install the wheels of bench/fetch_wheels.sh where grain, soundfile, ...
                or spidr are missing, then record the machine and the versions (bench.machine_info)
  step_jax      spidr_jax's compiled training step, SpidR base, 15 x 15 s (3.6 M samples, within the
                reference's 3.8 M per GPU), bf16; then 2 more steps traced (bench.step_profile): where the
                step's time goes, by operation and kind, into profile/ (the step's figure is out before)
  step_ref      the reference's step on the same batch under torch.compile(dynamic=False) and bf16 autocast
  step_eager    only if step_ref gave no figure: the reference's eager bf16 step (labelled eager)
  extract       feature extraction throughput, both implementations, the same files (bench.extraction throughput)
  parity_bf16   tests/test_mixed_precision.py's bf16 run against the reference's float32 run, JAX on the GPU
                (the bf16 tolerances: loss rtol 2e-3, grad norm 5e-2, perplexities 3e-2 and 1e-3)
  parity_f32    tests/test_model_parity.py's small variants, JAX on the GPU, at its float32 tolerance
  step_cudnn    only with 100 s or more of the 8 left: step_jax with run.attention=cudnn (cuDNN's fused kernel
                where attention has no dropout: the teacher), to choose run.attention=auto's kernel on GPUs
  compile_no_autotune  only with a minute or more of the 8 left: step_jax's step compiled again with XLA's
                autotuning off (--xla_gpu_autotune_level=0, bench.compile_time): how much of the compile time
                goes to trying kernels and cuDNN convolution algorithms rather than to the graph's size
  compile_unroll  only with a minute or more of the 8 left: the same step compiled with unrolled layers
                (bench.compile_time), against step_jax's compilation with scanned ones (run.layer_loop=auto)
`parts.jsonl` gets one line per part (exit status, wall time, limit, last output line). The table and the JSON
line of bench.results are printed after the step parts (so a run cut short still reports the step) and at the
end; both are written into the results folder (summary.json, table.md).

--cpu-smoke: the same parts on this CPU with configs/tiny.py's model, 2 x 2 s, and the tests only collected:
checks that the run works end to end, measures nothing about GPUs.
Environment: STEP_ARGS (replaces the step flags), WHEELS (the setup part's folder, default bench/wheels),
LIMIT_<PART> (seconds, e.g. LIMIT_STEP_JAX=200; their total must stay within TOTAL_LIMIT, default 480).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bench import REPO_ROOT, module_command
from bench.results import read_lines, write_summary

KILL_AFTER_S = 5  # from SIGTERM at the limit to SIGKILL
MARGIN_S = 15  # kept free of the total when sizing the parts that run only in the time left


@dataclass(frozen=True)
class RunSettings:
    """What differs between the GPU run and the CPU smoke run."""

    smoke: bool
    step_args: list[str]
    extract_args: list[str]
    compile_args: list[str]
    pytest_mode: list[str]
    jax_platform: str  # JAX_PLATFORMS of the parity tests

    @classmethod
    def for_run(cls, *, smoke: bool) -> RunSettings:
        """The settings of the GPU run, or of the smoke run; STEP_ARGS replaces the step flags of either."""
        if smoke:
            step = "--tiny --batch 2 --seconds 2 --dtype bfloat16 --warmup 3 --repeats 3"
            extract = ["--files", "3", "--max-shapes", "1", "--runs", "2"]
            compile_ = ["--models", "tiny", "--batch", "2", "--seconds", "2", "--dtype", "bfloat16"]
            pytest_mode, platform = ["--collect-only"], "cpu"  # the GPU run executes these tests
        else:
            step = "--batch 15 --seconds 15 --dtype bfloat16 --warmup 3 --repeats 5"
            # the extract part's 70 s hold no whole-process timing of the reference
            extract = ["--files", "40", "--max-shapes", "2", "--runs", "2", "--no-reference-process"]
            compile_ = ["--models", "base", "--batch", "15", "--seconds", "15", "--dtype", "bfloat16"]
            pytest_mode, platform = [], "cuda"
        step_args = os.environ.get("STEP_ARGS", step).split()
        return cls(smoke, step_args, extract, compile_, pytest_mode, platform)


def part_limits(*, smoke: bool) -> dict[str, int]:
    """Seconds per fixed part, LIMIT_<PART> overriding each. The smoke run's extraction runs the base model on a CPU."""
    defaults = {"setup": 35, "step_jax": 100 if smoke else 170, "step_ref": 90, "step_eager": 35}
    defaults |= {"extract": 120 if smoke else 70, "parity_bf16": 50, "parity_f32": 30}
    return {name: int(os.environ.get(f"LIMIT_{name.upper()}", seconds)) for name, seconds in defaults.items()}


class PartRunner:
    """Runs parts one at a time into a results folder, each under its limit, and records how each went."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out = out
        self.env = env

    def run(self, name: str, limit: int, command: list[str], extra_env: dict[str, str] | None = None) -> int:
        """Run `command` in its own process group from the repository root; its exit status (124/137 at the limit)."""
        print(f"== {name} (limit {limit} s)", flush=True)
        log_path = self.out / f"{name}.log"
        start = time.time()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env | (extra_env or {}), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            copier = threading.Thread(target=copy_output, args=(process.stdout, log), daemon=True)
            copier.start()
            try:
                rc = wait_within(process, limit)
            except BaseException:  # interrupted: leave no part running behind
                kill_group(process, signal.SIGKILL)
                raise
            copier.join(timeout=KILL_AFTER_S)  # a process left in the group may hold the pipe open
        record = {"part": name, "rc": rc, "limit_s": limit, "wall_s": round(time.time() - start, 1)}
        record["last_line"] = last_line(log_path)
        with (self.out / "parts.jsonl").open("a", encoding="utf-8") as parts:
            parts.write(json.dumps(record) + "\n")
        print(f"== {name}: exit {rc}", flush=True)
        return rc


def copy_output(stream: BinaryIO, log: BinaryIO) -> None:
    """Copy a part's output, as it comes, to the console and its log (until the log is closed, if not before)."""
    with contextlib.suppress(ValueError, OSError):  # the log closed under a process left holding the pipe
        while chunk := os.read(stream.fileno(), 65536):
            for sink in (sys.stdout.buffer, log):
                sink.write(chunk)
                sink.flush()


def kill_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Send `sig` to the process group of `process` (its session leader), if any of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def wait_within(process: subprocess.Popen, limit: int) -> int:
    """The exit status of `process`, as a shell reports it; at `limit` seconds its group is stopped: 124, or 137."""
    try:
        rc = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_AFTER_S)
        except subprocess.TimeoutExpired:
            kill_group(process, signal.SIGKILL)
            process.wait()
            return 128 + signal.SIGKILL
        return 124
    return 128 - rc if rc < 0 else rc


def last_line(log_path: Path, width: int = 200) -> str:
    """The last line of a log that is not blank, cut to `width` characters."""
    lines = [line for line in log_path.read_bytes().decode(errors="replace").split("\n") if line.strip()]
    return lines[-1][:width] if lines else ""


def default_results_dir(*, smoke: bool) -> Path:
    """bench/results/gpu-DATE (or cpu-smoke-DATE), DATE in UTC."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return REPO_ROOT / "bench" / "results" / f"{'cpu-smoke' if smoke else 'gpu'}-{stamp}"


def part_environment(*, smoke: bool) -> dict[str, str]:
    """The parts' environment: unbuffered output, the repository importable, this interpreter; CPU only if smoke."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "PYTHON": sys.executable}
    if smoke:
        env |= {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    return env


class GpuRun:
    """The parts' commands for one results folder, and the order and conditions in which they run."""

    def __init__(self, out: Path, settings: RunSettings, limits: dict[str, int], total_limit: int) -> None:
        self.out, self.settings, self.limits, self.total_limit = out, settings, limits, total_limit
        self.runner = PartRunner(out, part_environment(smoke=settings.smoke))
        self.begin = time.time()

    def time_left(self) -> int:
        """Seconds of the total left, less a margin."""
        return int(self.total_limit - (time.time() - self.begin) - MARGIN_S)

    def step(self, *args: str, json_name: str = "step.jsonl") -> list[str]:
        """bench.step_speed with the run's step flags."""
        return module_command("step_speed", *args, *self.settings.step_args, "--json", str(self.out / json_name))

    def parity(self, test_file: str, selection: str) -> list[str]:
        """Some parity tests (only collected in the smoke run)."""
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *self.settings.pytest_mode]
        return [*pytest, test_file, "-k", selection]

    def compile_time(self, layers: str, json_name: str) -> list[str]:
        """bench.compile_time once, for the run's model and shape."""
        args = ["--layers", layers, "--runs", "1", *self.settings.compile_args, "--json", str(self.out / json_name)]
        return module_command("compile_time", *args)

    def run(self, name: str, command: list[str], extra_env: dict[str, str] | None = None) -> None:
        """One fixed part under its limit."""
        self.runner.run(name, self.limits[name], command, extra_env)

    def fixed_parts(self) -> None:
        """Setup, the steps (the table printed after them), extraction and the parity tests."""
        smoke = str(int(self.settings.smoke))
        self.run("setup", ["bash", "bench/gpu.sh", "--setup", str(self.out), smoke])
        self.run("step_jax", [*self.step("--side", "jax"), "--profile", str(self.out / "profile")])
        self.run("step_ref", self.step("--side", "reference", "--torch-compile", "static"))
        if not any(line.get("side") == "reference" for line in read_lines(self.out / "step.jsonl")):
            self.run("step_eager", self.step("--side", "reference", "--torch-compile", "eager"))
        try:
            write_summary(self.out)
        except Exception as error:  # noqa: BLE001 - the step's table is a courtesy; the parts go on
            print(f"bench.results: {type(error).__name__}: {error}", flush=True)
        extract = [*self.settings.extract_args, "--json", str(self.out / "extract.jsonl")]
        self.run("extract", module_command("extraction", "throughput", *extract))
        parity_env = {"JAX_PLATFORMS": self.settings.jax_platform}
        self.run("parity_bf16", self.parity("tests/test_mixed_precision.py", "bfloat16_run_stays_close"), parity_env)
        self.run("parity_f32", self.parity("tests/test_model_parity.py", "small_variants"), parity_env)

    def parts_in_time_left(self) -> None:
        """The parts that run only when enough of the total is left, each limited to what is left."""
        if (left := self.time_left()) >= 100 and not self.settings.smoke:  # cuDNN needs the GPU
            command = self.step("--side", "jax", "--attention", "cudnn", json_name="step_cudnn.jsonl")
            self.runner.run("step_cudnn", min(left, 150), command)
        if (left := self.time_left()) >= 60:
            flags = [os.environ.get("XLA_FLAGS", ""), "--xla_gpu_autotune_level=0"]
            command = self.compile_time("scan", "compile_no_autotune.jsonl")
            self.runner.run(
                "compile_no_autotune", min(left, 150), command, {"XLA_FLAGS": " ".join(filter(None, flags))}
            )
        if (left := self.time_left()) >= 60:
            self.runner.run("compile_unroll", left, self.compile_time("unroll", "compile.jsonl"))


def run_gpu(out: Path | None, *, smoke: bool) -> int:
    """Every part in order into `out` (default: a new dated folder); 2 if the limits exceed the total."""
    total_limit = int(os.environ.get("TOTAL_LIMIT", "480"))
    limits = part_limits(smoke=smoke)
    if sum(limits.values()) > total_limit:
        print(f"the part limits add up to {sum(limits.values())} s, more than {total_limit} s", file=sys.stderr)
        return 2
    out = (out or default_results_dir(smoke=smoke)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = GpuRun(out, RunSettings.for_run(smoke=smoke), limits, total_limit)
    run.fixed_parts()
    run.parts_in_time_left()
    print(f"== all parts: {int(time.time() - run.begin)} s", flush=True)
    write_summary(out)
    return 0
