"""Submitting with `sbatch --parsable`, or printing what would be submitted (--dry-run)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from spidr_jax.errors import UsageError

SUBMIT_TIMEOUT = 120  # seconds; sbatch answers in well under a second unless the controller is unreachable


def environment() -> dict[str, str]:
    """The environment sbatch passes on to the job: this interpreter runs the processes."""
    return os.environ | {"PYTHON": sys.executable}


def sbatch(args: list[str]) -> str:
    """Run `sbatch ARGS` (with --parsable among them) and return the job id; raises `UsageError` on refusal."""
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch not found: run on a SLURM login node (or use --dry-run)")
    try:
        # sbatch is found on PATH, as on any login node.
        done = subprocess.run(  # noqa: S603 (our own command line)
            ["sbatch", *args],  # noqa: S607
            env=environment(),
            capture_output=True,
            text=True,
            timeout=SUBMIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"sbatch did not answer within {SUBMIT_TIMEOUT} s") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise UsageError(f"sbatch refused the job: {message}")
    # --parsable prints "JOBID" or "JOBID;CLUSTER".
    return done.stdout.strip().split(";", 1)[0]


def show(args: list[str], script: Path) -> None:
    """--dry-run: the command line and the script it would submit."""
    print("PYTHON=" + shlex.quote(sys.executable) + " " + shlex.join(["sbatch", *args]))
    print(f"# {script}:")
    print(script.read_text(), end="")
