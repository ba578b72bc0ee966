"""The launcher's command line: SLURM resources, the dump folder, and what the jobs run."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spidr_jax.errors import UsageError

DUMP_VARIABLE = "SPIDR_JAX_LAUNCH_FOLDER"
DEFAULT_DUMP = "slurm_jobs"  # relative to the submission directory, which compute nodes usually share

USAGE = """\
python -m spidr_jax.launch [OPTIONS] CONFIG [CONFIG ...] [--config.SECTION.FIELD=VALUE ...]
       python -m spidr_jax.launch extract [OPTIONS] EXTRACT ARGUMENTS..."""
EPILOG = """\
One job per config; the overrides apply to every config. `extract` runs `python -m spidr_jax.extract` with the
remaining arguments on every task (the processes share the manifest). Examples:

  python -m spidr_jax.launch -A myaccount -N 2 -G 8 -t 1440 configs/base.py \\
      --config.run.workdir=/shared/runs/base --config.data.manifest=/shared/train.csv
  python -m spidr_jax.launch --cpu -G 2 -c 1 configs/tiny.py --config.run.workdir=runs/tiny \\
      --config.data.manifest=train.csv
  python -m spidr_jax.launch extract -G 8 --checkpoint runs/base --manifest dev.csv --output feats --layer 6"""


@dataclass
class LaunchOptions:
    """What to submit, and with which resources."""

    mode: str  # "train" or "extract"
    configs: list[str] = field(default_factory=list)  # train: config files (FILE or FILE:ARG)
    overrides: list[str] = field(default_factory=list)  # train: --config.SECTION.FIELD=VALUE
    extract_args: list[str] = field(default_factory=list)  # extract: arguments of python -m spidr_jax.extract
    account: str | None = None
    nodes: int = 1
    gpus_per_node: int | None = None  # None: the script's default (8); processes per node with --cpu
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None
    time: int | None = None  # minutes
    constraint: str | None = None
    partition: str | None = None
    qos: str | None = None
    signal_lead: int | None = None  # seconds before the time limit at which the processes get SIGTERM
    dump: Path = Path(DEFAULT_DUMP)
    dry_run: bool = False
    cpu: bool = False


def positive(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with errors raised as `UsageError` (one line) instead of printing the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for --help)."""
    parser = _Parser(
        prog="python -m spidr_jax.launch",
        usage=USAGE,
        description="Submit spidr_jax training (or extraction) jobs to SLURM, after checking their configs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # extraction arguments such as --dtype must never be read as a launcher option
    )
    slurm = parser.add_argument_group("SLURM resources")
    slurm.add_argument("-A", "--account", help="account to charge")
    slurm.add_argument("-N", "--nodes", type=positive, default=1, help="nodes per job (default: 1)")
    slurm.add_argument(
        "-G",
        "--gpus-per-node",
        type=positive,
        help="GPUs per node, one process each (default: 8); with --cpu: processes",
    )
    slurm.add_argument("-c", "--cpus-per-task", type=positive, help="CPU cores per process (default: 8)")
    slurm.add_argument("--mem-per-gpu", help="memory per GPU, e.g. 64G")
    slurm.add_argument("-t", "--time", type=positive, help="time limit in minutes (default: 1440)")
    slurm.add_argument("-C", "--constraint", help="node features, e.g. h100")
    slurm.add_argument("-p", "--partition", help="partition")
    slurm.add_argument("-q", "--qos", help="quality of service")
    slurm.add_argument(
        "--signal-lead",
        type=positive,
        help="seconds before the time limit at which the processes get SIGTERM to save and requeue (default: 180)",
    )
    launch = parser.add_argument_group("launcher")
    launch.add_argument(
        "--dump",
        type=Path,
        help=f"folder for job scripts, resolved configs and logs (default: ${DUMP_VARIABLE}, else ./{DEFAULT_DUMP})",
    )
    launch.add_argument(
        "--dry-run", action="store_true", help="print the sbatch commands and the script; submit nothing"
    )
    launch.add_argument("--cpu", action="store_true", help="CPU-only jobs: no GPUs requested, -G processes per node")
    parser.add_argument("configs", nargs="*", metavar="CONFIG", help="config files, one job each")
    return parser


# The options that go to sbatch as they are (fields of LaunchOptions and attributes of the parsed namespace).
SLURM_OPTIONS = (
    "account", "nodes", "gpus_per_node", "cpus_per_task", "mem_per_gpu", "time", "constraint", "partition", "qos",
    "signal_lead",
)  # fmt: skip


def parse_options(argv: Sequence[str]) -> LaunchOptions:
    """The launch options from the command line (without the program name); raises `UsageError`."""
    args = list(argv)
    mode = "train"
    if args and args[0] == "extract":
        mode, args = "extract", args[1:]
    parser = build_parser()
    namespace, rest = parser.parse_known_args(args)
    options = LaunchOptions(
        mode=mode,
        **{name: getattr(namespace, name) for name in SLURM_OPTIONS},
        dump=namespace.dump or Path(os.environ.get(DUMP_VARIABLE) or DEFAULT_DUMP),
        dry_run=namespace.dry_run,
        cpu=namespace.cpu,
    )
    if mode == "extract":
        # Everything the launcher does not know goes to spidr_jax.extract, in order.
        options.extract_args = _extract_args(args, parser)
        if not options.extract_args:
            raise UsageError("extract needs the arguments of python -m spidr_jax.extract (--checkpoint ...)")
    else:
        # Config files may follow overrides: argparse leaves such late positionals in `rest`.
        configs = [*namespace.configs, *(arg for arg in rest if not arg.startswith("-"))]
        overrides = [arg for arg in rest if arg.startswith("-")]
        unknown = [arg for arg in overrides if not arg.startswith("--config.") or "=" not in arg]
        if unknown:
            raise UsageError(f"unrecognized argument {unknown[0]!r} (overrides are --config.SECTION.FIELD=VALUE)")
        if not configs:
            raise UsageError("no config file given, e.g. configs/base.py")
        options.configs, options.overrides = configs, overrides
    if options.cpu and options.mem_per_gpu:
        raise UsageError("--mem-per-gpu needs GPUs; leave it out with --cpu")
    if options.signal_lead is not None and options.time is not None and options.signal_lead >= 60 * options.time:
        raise UsageError(
            f"--signal-lead {options.signal_lead} s is not shorter than the time limit ({options.time} min)"
        )
    return options


def _extract_args(args: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The extraction arguments in their original order: `args` without the launcher's own options."""
    own: set[str] = set()
    takes_value: set[str] = set()
    for action in parser._actions:  # noqa: SLF001 (argparse exposes no public list of its options)
        own.update(action.option_strings)
        if action.nargs != 0:
            takes_value.update(action.option_strings)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--":
            continue
        name = arg.split("=", 1)[0]
        if name in own:
            skip = name in takes_value and "=" not in arg
            continue
        if not arg.startswith("--") and arg[:2] in takes_value:  # a short option with its value attached: -G8
            continue
        kept.append(arg)
    return kept
