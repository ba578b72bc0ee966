"""Running `python -m spidr_jax.train` on the tiny config with small batches, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def small_batches(rows: int) -> list[str]:
    """Overrides for short runs: one static shape of 0.5-1 s clips, `rows` clips of 1 s per device and step, and
    a log line at every step."""
    return [
        "--config.data.num_static_shapes=1",
        "--config.data.min_sample_size=8000",
        "--config.data.max_sample_size=16000",
        f"--config.data.max_batch_length={16000 * rows}",
        "--config.run.log_interval=1",
    ]


COMMON = small_batches(4)


def train_args(corpus: Path, workdir: Path, *extra: str, manifest: str = "train.csv") -> list[str]:
    """The trainer's command line for `corpus / manifest` into `workdir`, with the small-batch overrides."""
    return [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}", f"--config.data.manifest={corpus / manifest}",
            f"--config.run.workdir={workdir}", *COMMON, *extra]  # fmt: skip


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run a command from the repository root and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=900)
