"""Training with several JAX processes on this machine, as on a cluster: 2 or 4 processes of 1 or 2 CPU devices.

The processes find each other through `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` and run
their cross-process collectives over Gloo (TCP). Each loads only its own rows of every global batch, so a run of
P processes x D devices must log the losses of 1 process x P*D devices, and a restart of all processes must resume
from their common checkpoint, also with another number of processes. One device per process is the layout of a
GPU cluster (one process per GPU). A stop signal reaching one process only must stop them all at the same step,
with a checkpoint (a preemption notice on one host).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from spidr_jax.evaluate.plots import read_scalars
from spidr_jax.pretrained import read_pretrained
from tests.processes import gloo_available, start_processes, wait_all
from tests.run_outputs import leaves, logged_steps
from tests.train_cli import ROOT, TINY, small_batches

OVERRIDES = small_batches(2)  # 2 rows per device: a global batch of 4 rows per 2 devices
TIMEOUT = 240  # seconds for one run of the trainer (a few steps of the tiny model take ~20 s on 2 cores)
pytestmark = [
    pytest.mark.skipif(not gloo_available(), reason="this jaxlib has no Gloo CPU collectives"),
    pytest.mark.slow,  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")
]


@dataclass
class Finished:
    """What one trainer process did."""

    returncode: int | None  # None: it was still running at the deadline and was killed
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def single_run(manifest, cache, tmp_path_factory) -> Callable[[int], Path]:
    """The workdir of a 4-step run of 1 process with a given number of devices (each run once per module)."""
    done: dict[int, Path] = {}

    def get(devices: int) -> Path:
        if devices not in done:
            workdir = tmp_path_factory.mktemp(f"single_{devices}")
            run(train_args(manifest, workdir / "run", 4), cache, workdir / "logs", processes=1, devices=devices)
            done[devices] = workdir / "run"
        return done[devices]

    return get


@pytest.fixture(scope="module")
def first_half(manifest, cache, tmp_path_factory) -> Callable[[int, int], tuple[Path, list[Finished]]]:
    """A 2-step run of P processes x D devices and what each process printed (each layout run once per module).

    Tests resume copies of it: the 2-process, 1-device one serves two tests.
    """
    done: dict[tuple[int, int], tuple[Path, list[Finished]]] = {}

    def get(processes: int, devices: int) -> tuple[Path, list[Finished]]:
        if (processes, devices) not in done:
            root = tmp_path_factory.mktemp(f"first_{processes}x{devices}")
            finished = run(train_args(manifest, root / "run", 2), cache, root / "logs", processes=processes,
                           devices=devices)  # fmt: skip
            done[processes, devices] = root / "run", finished
        return done[processes, devices]

    return get


def train_args(manifest: Path, workdir: Path, max_steps: int) -> list[str]:
    return [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}", f"--config.data.manifest={manifest}",
            f"--config.run.workdir={workdir}", *OVERRIDES, f"--config.optimizer.max_steps={max_steps}"]  # fmt: skip


def launch(args: list[str], cache: Path, logs: Path, *, processes: int, devices: int) -> list[subprocess.Popen]:
    """Start `processes` trainers of `devices` devices each, joined by a local coordinator when there are several."""
    return start_processes(args, cache, logs, processes=processes, devices=devices, cwd=ROOT)


def finish(started: list[subprocess.Popen], logs: Path, timeout: float = TIMEOUT) -> list[Finished]:
    """Wait for every process (all within `timeout` seconds); what each did."""
    codes = wait_all(started, timeout)
    return [
        Finished(code, (logs / f"{rank}.out").read_text(), (logs / f"{rank}.err").read_text())
        for rank, code in enumerate(codes)
    ]


def run(args: list[str], cache: Path, logs: Path, *, processes: int, devices: int) -> list[Finished]:
    """Launch and wait; every process must exit 0."""
    results = finish(launch(args, cache, logs, processes=processes, devices=devices), logs)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"process {rank} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return results


def logged_losses(workdir: Path) -> dict[int, float]:
    return dict(read_scalars(workdir)["train/loss"])


@pytest.mark.parametrize("layout", [(2, 1), (2, 2), (4, 1)], ids=["2x1_device", "2x2_devices", "4x1_device"])
def test_processes_train_as_one(manifest, cache, single_run, first_half, tmp_path, layout):  # noqa: PLR0917
    processes, devices = layout  # processes, devices per process
    single = single_run(processes * devices)

    # 2 steps, then all processes restart and continue to step 4 from their common checkpoint.
    stopped, first = first_half(processes, devices)
    assert f"({processes * devices} devices, {processes} processes)" in first[0].stdout
    assert "workdir:" not in first[1].stdout  # only process 0 prints
    assert (stopped / "checkpoints" / "2").is_dir()
    multi = tmp_path / "multi"
    shutil.copytree(stopped, multi)
    second = run(train_args(manifest, multi, 4), cache, tmp_path / "logs_second", processes=processes, devices=devices)
    assert "resumed" in second[0].stdout
    assert (multi / "checkpoints" / "4").is_dir()
    assert_same_run(single, multi)


def test_a_run_resumes_on_another_number_of_processes(manifest, cache, single_run, first_half, tmp_path):
    single = single_run(2)
    # Saved by 2 processes of 1 device, resumed by 1 process of 2 devices (the same global batch).
    moved = tmp_path / "moved"
    shutil.copytree(first_half(2, 1)[0], moved)
    second = run(train_args(manifest, moved, 4), cache, tmp_path / "logs_second", processes=1, devices=2)
    assert "resumed" in second[0].stdout
    assert_same_run(single, moved)


def assert_same_run(single: Path, multi: Path) -> None:
    """The two workdirs logged the same losses and hold the same final model."""
    expected, got = logged_losses(single), logged_losses(multi)
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=1e-5)
    _, tree_single = read_pretrained(single)
    _, tree_multi = read_pretrained(multi)
    for a, b in zip(leaves(tree_single), leaves(tree_multi), strict=True):
        # Sums over devices (gradients, codebook statistics) are reduced in another order across processes.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(a), initial=1.0)))


@pytest.mark.parametrize("devices", [1, 2], ids=["1_device", "2_devices"])
def test_a_stop_signal_on_one_process_stops_all_at_one_checkpoint(manifest, cache, tmp_path, devices):
    workdir, logs = tmp_path / "run", tmp_path / "logs"
    started = launch(train_args(manifest, workdir, 100_000), cache, logs, processes=2, devices=devices)
    try:
        deadline = time.monotonic() + TIMEOUT
        while max(logged_steps(workdir), default=0) < 3 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in started), "a process exited before step 3"
            time.sleep(0.5)
        started[1].send_signal(signal.SIGTERM)  # a preemption notice for the second host only
    finally:
        results = finish(started, logs, timeout=45)  # a stop takes seconds
    for rank, result in enumerate(results):
        assert result.returncode == 128 + signal.SIGTERM, f"process {rank} exited {result.returncode}: {result.stderr}"
    stopped = max(logged_steps(workdir))
    assert f"saved a checkpoint at step {stopped}" in results[0].stdout
    assert (workdir / "checkpoints" / str(stopped)).is_dir()
