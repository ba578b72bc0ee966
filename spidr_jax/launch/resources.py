"""The sbatch options of a job: the launch options in SLURM's words."""

from __future__ import annotations

from pathlib import Path

from spidr_jax.config.model import SAMPLE_RATE
from spidr_jax.config.run import Config
from spidr_jax.launch.options import LaunchOptions


def sbatch_options(options: LaunchOptions, *, job_name: str, log: Path, workdir: Path) -> list[str]:
    """`--nodes`, `--ntasks-per-node`, `--gpus-per-node`, ... for one job (the script's #SBATCH lines fill the rest).

    One process per GPU: `-G` sets both the GPUs and the tasks per node. With `--cpu` no GPU is requested
    (`--gpus-per-node=0` overrides the script's default) and `-G` is the number of processes per node.
    """
    args = ["--parsable", f"--job-name={job_name}", f"--output={log}", f"--chdir={workdir}"]
    args.append(f"--nodes={options.nodes}")
    if options.cpu:
        args += ["--gpus-per-node=0", f"--ntasks-per-node={options.gpus_per_node or 1}"]
    elif options.gpus_per_node is not None:
        args += [f"--gpus-per-node={options.gpus_per_node}", f"--ntasks-per-node={options.gpus_per_node}"]
    named = {
        "--account": options.account,
        "--cpus-per-task": options.cpus_per_task,
        "--mem-per-gpu": options.mem_per_gpu,
        "--time": options.time,
        "--constraint": options.constraint,
        "--partition": options.partition,
        "--qos": options.qos,
    }
    args += [f"{name}={value}" for name, value in named.items() if value is not None]
    if options.signal_lead is not None:
        args.append(f"--signal=TERM@{options.signal_lead}")  # to the tasks only (no "B:"), as the script expects
    return args


SCRIPT_GPUS_PER_NODE = 8  # launch/slurm_gpu.sbatch's default


def summary(options: LaunchOptions, name: str, cfg: Config | None) -> str:
    """The first line of a dry run: nodes, processes, devices, the global batch of a training, the time limit."""
    per_node = options.gpus_per_node or (1 if options.cpu else SCRIPT_GPUS_PER_NODE)
    processes = options.nodes * per_node
    devices = "CPU devices" if options.cpu else "GPUs"
    line = f"{name}: {options.nodes} node(s) x {per_node} processes = {processes} processes, one per {devices[:-1]}"
    if cfg is not None:
        samples = processes * cfg.data.max_batch_length
        line += (
            f"; global batch at most {processes} x {cfg.data.max_batch_length:,} samples = {samples:,} samples "
            f"({samples / SAMPLE_RATE:,.0f} s of audio) per step"
        )
    limit = f"{options.time} minutes" if options.time is not None else "the script's default"
    return f"{line}; time limit {limit}"


def script_arguments(options: LaunchOptions, config: str | None) -> list[str]:
    """The arguments after the script's path: `[--cpu] train CONFIG OVERRIDES...` or `[--cpu] extract ARGS...`."""
    head = ["--cpu"] if options.cpu else []
    if options.mode == "extract":
        return [*head, "extract", *options.extract_args]
    return [*head, "train", str(config), *options.overrides]
