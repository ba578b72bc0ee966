"""Child processes of the tests that train or extract as on a cluster: their environment and their coordinator."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

# Variables that would make a child process join another job (when the tests run inside a SLURM or TPU job).
LAUNCHER_PREFIXES = ("SLURM_", "TPU_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE")


# A progress line (spidr_jax.progress.LineProgress), printed when a step takes long: "running the model: 2/4 (50%), 5s".
PROGRESS_LINE = re.compile(r"^[^:]+: [\d.]+(/[\d.]+ \(\d+%\))?, \d")


def messages(stderr: str) -> list[str]:
    """The lines of a command's stderr without its progress lines, which come or not with the machine's speed."""
    return [line for line in stderr.strip().splitlines() if not PROGRESS_LINE.match(line)]


def gloo_available() -> bool:
    """Whether this jaxlib has the Gloo CPU collectives that multi-process CPU runs need."""
    from jax._src.lib import _jax

    return hasattr(_jax, "make_gloo_tcp_collectives")


def free_port() -> int:
    """A TCP port nobody listens on now (for the coordinator of one launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def without_launcher(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables of a launcher."""
    return {k: v for k, v in env.items() if not k.startswith(LAUNCHER_PREFIXES)}


def cpu_env(cache: Path, devices: int, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (this environment) without launcher variables, on the CPU with `devices` simulated devices."""
    env = without_launcher(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["SPIDR_JAX_COMPILATION_CACHE"] = str(cache)
    return env | extra


def coordinator_env(port: int, processes: int, rank: int) -> dict[str, str]:
    """The variables that join process `rank` of `processes` through a coordinator on this machine."""
    if processes == 1:
        return {}
    return {
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(processes),
        "JAX_PROCESS_ID": str(rank),
    }


def start_processes(
    command: list[str], cache: Path, logs: Path, *, processes: int, devices: int, cwd: Path
) -> list[subprocess.Popen]:
    """Start `processes` copies of `command` with `devices` CPU devices each, joined by a local coordinator.

    Each writes its stdout to `logs/<rank>.out` and its stderr to `logs/<rank>.err` (a full pipe would block a
    process that the test is not reading yet), in its own process group (a straggler is killed with its children).
    """
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = []
    for rank in range(processes):
        env = cpu_env(cache, devices, **coordinator_env(port, processes, rank))
        with (logs / f"{rank}.out").open("w") as out, (logs / f"{rank}.err").open("w") as err:
            started.append(subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True))
    return started


def wait_all(started: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Each process's exit code (None: still running at the deadline, `timeout` s from now, and then killed)."""
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for process in started:
        try:
            codes.append(process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return codes
