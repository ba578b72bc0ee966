"""The sbatch options of a job: the launch options in SLURM's words."""

from __future__ import annotations

from pathlib import Path

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


def script_arguments(options: LaunchOptions, config: str | None) -> list[str]:
    """The arguments after the script's path: `[--cpu] train CONFIG OVERRIDES...` or `[--cpu] extract ARGS...`."""
    head = ["--cpu"] if options.cpu else []
    if options.mode == "extract":
        return [*head, "extract", *options.extract_args]
    return [*head, "train", str(config), *options.overrides]
