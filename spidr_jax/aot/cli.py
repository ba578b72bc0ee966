"""`python -m spidr_jax.aot`: does a config's training step fit a TPU slice or GPU node, and what does it cost.

    python -m spidr_jax.aot --config=configs/base.py --target=v5p-128 --target=h100x8
    python -m spidr_jax.aot --config=configs/base.py --target=v5e-8 --quick --config.data.max_batch_length=1600000
    python -m spidr_jax.aot --list-targets

The config and its overrides are those of `python -m spidr_jax.train`. Exit codes: 0 when every shape fits, 1
when one does not (one line each, after every shape was checked), 2 for a bad command line, target or config, or
a target whose compiler is not installed (`pip install -e ".[aot]"`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spidr_jax.aot.check import check, use_cpu_only
from spidr_jax.aot.costs import FlopCounter
from spidr_jax.aot.report import format_table
from spidr_jax.aot.targets import describe_targets, parse_target
from spidr_jax.config.cli import parse_config
from spidr_jax.config.model import ConfigError
from spidr_jax.errors import UsageError, exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    """The command line (config arguments are parsed by spidr_jax.config.cli)."""
    parser = argparse.ArgumentParser(
        prog="python -m spidr_jax.aot",
        description=(
            "Compile the real training step for a TPU slice or GPU node that is not attached (from any machine, "
            "CPU included, never using its accelerator): does every batch shape fit the device memory, and what "
            "does a step cost (FLOPs, bytes, kernels, and the roofline bound on its time, a bound, not a "
            "measurement)? Config arguments as for python -m spidr_jax.train: --config=FILE and "
            "--config.SECTION.FIELD=VALUE."
        ),
        epilog="Exit codes: 0 all shapes fit, 1 a shape does not fit, 2 bad arguments or no compiler for a target.",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="a TPU slice (v4-8, v5e-8 or v5litepod-8, v5p-128, v6e-256) or GPU node(s) (a100x8, h100x8, "
        "h100x16, h200x8, b200x8); repeat for several",
    )
    parser.add_argument("--slices", type=int, default=1, help="number of TPU slices of that kind (multi-slice)")
    parser.add_argument(
        "--quick", action="store_true", help="check only the batch shape with the most samples per device"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per target, shape and phase")
    parser.add_argument("--list-targets", action="store_true", help="print the known targets and chips, then exit")
    parser.add_argument("--hlo-dir", metavar="DIR", help="also write each compiled program's optimized HLO text there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Check every target; print the table (or JSON lines); exit 1 if a shape does not fit."""
    use_cpu_only()
    args_in = list(sys.argv[1:] if argv is None else argv)
    config_args = [arg for arg in args_in if arg.startswith(("--config", "-config"))]
    args = build_parser().parse_args([arg for arg in args_in if arg not in config_args])
    if args.list_targets:
        print(describe_targets())
        return
    with exit_on_user_error():
        if not args.target:
            raise UsageError("name at least one --target (python -m spidr_jax.aot --list-targets shows them)")
        try:
            cfg = parse_config(config_args)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        targets = [parse_target(name, slices=args.slices) for name in args.target]  # all names checked first
        flop_counter = FlopCounter(cfg)
        records = []
        for target in targets:
            try:
                records += check(
                    cfg, target, quick=args.quick, progress=not args.no_progress, flop_counter=flop_counter,
                    hlo_dir=args.hlo_dir,
                )  # fmt: skip
            except ConfigError as error:  # a setting the target cannot run (run.attention=cudnn on a TPU)
                raise UsageError(f"--target={target.name}: {error}") from None
        if args.json:
            for record in records:
                print(record.to_json())
        else:
            print(format_table(records))
        failures = [record.message for record in records if not record.fits]
        for message in dict.fromkeys(failures):
            print(f"error: {message}", file=sys.stderr)
        if failures:
            sys.exit(1)
