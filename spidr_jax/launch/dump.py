"""The dump folder: one directory per job with the script it runs, its resolved config and its log."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import spidr_jax

SCRIPT_NAME = "slurm_gpu.sbatch"


def sbatch_script() -> Path:
    """`launch/slurm_gpu.sbatch` of the checkout this package runs from."""
    path = Path(spidr_jax.__file__).resolve().parents[1] / "launch" / SCRIPT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the launcher runs from a checkout of spidr-jax (pip install -e)")
    return path


@dataclass(frozen=True)
class JobFolder:
    """Where one job's files go; `log` keeps SLURM's `%j` until the job id is known."""

    path: Path

    @property
    def script(self) -> Path:
        """The job script as submitted (a copy, so that later edits of the checkout do not change a queued job)."""
        return self.path / SCRIPT_NAME

    @property
    def log(self) -> Path:
        """The log of all the job's processes and runs (`%j`: the job id)."""
        return self.path / "slurm-%j.out"

    def log_of(self, job_id: str) -> Path:
        """The log path once the job id is known."""
        return self.path / f"slurm-{job_id}.out"


def folder_name(name: str) -> str:
    """`<date>-<time>-<name>`: folders sort by submission time."""
    return time.strftime("%Y%m%d-%H%M%S-") + name


def job_folder(dump: Path, name: str) -> JobFolder:
    """A new folder `DUMP/<date>-<time>-<name>[-k]` (never an existing one)."""
    stem = folder_name(name)
    dump.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = dump.resolve() / (stem + (f"-{k}" if k else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return JobFolder(path)
    raise FileExistsError(f"{dump}: no free folder name for {stem}")


def write_job_files(folder: JobFolder, *, config_json: str | None, command: list[str], extract_args: list[str]) -> None:
    """The script copy, the resolved config (training) or the extraction's arguments, and the sbatch command."""
    shutil.copyfile(sbatch_script(), folder.script)
    if config_json is not None:
        (folder.path / "config.json").write_text(config_json + "\n")
    else:
        (folder.path / "extract.json").write_text(json.dumps({"arguments": extract_args}, indent=4) + "\n")
    (folder.path / "sbatch_command.json").write_text(json.dumps(command, indent=4) + "\n")
