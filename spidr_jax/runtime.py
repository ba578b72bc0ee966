"""Process setup before anything touches devices: multi-process JAX and the persistent compilation cache."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

from spidr_jax.errors import UserError


def integer_variable(name: str) -> int:
    """The environment variable `name` as an integer; a UserError naming it otherwise."""
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"the environment variable {name} must be an integer, got {value!r}") from None


def expected_process_count() -> int | None:
    """How many JAX processes this launch has, from the environment (1 for a plain local run).

    None when `SPIDR_JAX_DISTRIBUTED=1` asks JAX to find out (Cloud TPU VMs, other detected clusters).
    """
    if os.environ.get("SPIDR_JAX_DISTRIBUTED") == "1":
        return None
    if "JAX_NUM_PROCESSES" in os.environ:
        return integer_variable("JAX_NUM_PROCESSES")
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        return integer_variable("SLURM_NTASKS")
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len(hosts.split(",")) if hosts else 1


def initialize_distributed() -> None:
    """Join the other processes of this job; a no-op for a single process.

    Processes are found from SLURM, a Cloud TPU pod, explicit JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID variables, or JAX's own cluster detection when SPIDR_JAX_DISTRIBUTED=1.
    """
    count = expected_process_count()
    if (count is not None and count <= 1) or jax.distributed.is_initialized():
        return
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=integer_variable("JAX_NUM_PROCESSES"),
            process_id=integer_variable("JAX_PROCESS_ID"),
        )
    else:
        jax.distributed.initialize()  # cluster auto-detection (SLURM, Cloud TPU)


def enable_compilation_cache(directory: str | Path | None = None) -> Path:
    """Persist compiled programs across runs (restarts and resumes compile nothing they compiled before).

    The directory is `$SPIDR_JAX_COMPILATION_CACHE`, else `~/.cache/spidr_jax/jax`. Every program is kept, the
    small ones too: the model's initialization compiles one per parameter shape (about 5 s of a start otherwise).
    """
    default = os.environ.get("SPIDR_JAX_COMPILATION_CACHE") or Path.home() / ".cache" / "spidr_jax" / "jax"
    path = Path(directory or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # On GPUs, XLA's autotuning results (most of a step's compile time there) are kept per fusion in the same
    # directory, so other batch shapes and later runs reuse them (JAX's default, set here so that it stays so).
    jax.config.update("jax_persistent_cache_enable_xla_caches", "xla_gpu_per_fusion_autotune_cache_dir")
    # A program that cannot be written (a full disk) or read back (an entry cut short by one) is compiled again:
    # no cause for a warning; a full disk gets its own one-line error where it matters (checkpoints, outputs).
    warnings.filterwarnings("ignore", message="Error (writing|reading) persistent compilation cache entry")
    return path
