"""Evaluate a model's units and features: unit quality against phone alignments, ABX, and plots.

    python -m spidr_jax.evaluate units --checkpoint DIR --manifest dev.csv --alignments dev.alignments.txt --layer 6
    python -m spidr_jax.evaluate units ... --layer 6 --kmeans 256       # k-means units of a layer's features
    python -m spidr_jax.evaluate units --baseline mfcc --kmeans 256 --manifest dev.csv --alignments A   # no model
    python -m spidr_jax.evaluate abx --checkpoint DIR --manifest dev.csv --item dev.item --layer 6 [--units]
    python -m spidr_jax.evaluate abx --features FEATURES_DIR --item dev.item --speaker both
    python -m spidr_jax.evaluate plot curves --workdir runs/demo --output curves.png
    python -m spidr_jax.evaluate plot codebooks --checkpoint DIR [--manifest M [--alignments A]] --output c.png
    python -m spidr_jax.evaluate plot phone-units --checkpoint DIR --manifest M --alignments A --layer 6 --output m.png

DIR is a converted model directory or a training workdir (its newest checkpoint, or --step N's). Each command says
first which checkpoint it used. Audio at another rate, or with several channels, is resampled as it is read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spidr_jax.cli import HelpFormatter, command_parser
from spidr_jax.errors import UsageError, exit_on_user_error
from spidr_jax.evaluate import abx_command
from spidr_jax.evaluate.abx_command import add_arguments as add_abx_arguments


def add_checkpoint(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--checkpoint and --step."""
    parser.add_argument("--checkpoint", required=required, type=Path, help="a converted model directory or a workdir")
    parser.add_argument(
        "--step", type=int, help="of a training workdir, the checkpoint of this step (default: the newest intact one)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: units, abx, plot."""
    parser = command_parser("evaluate", __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{units,abx,plot}")

    units = commands.add_parser(
        "units", formatter_class=HelpFormatter,
        help="phone purity, cluster purity, PNMI, perplexity, active codewords and bitrate of units",
        description="The quality of units against phone alignments (the reference's units_quality): the model's "
        "codebook units, k-means units of a layer's features (--kmeans K), or k-means units of MFCCs "
        "(--baseline mfcc --kmeans K, no model). Needs --manifest and --alignments, and --checkpoint and --layer "
        "unless --baseline.",
    )  # fmt: skip
    add_checkpoint(units, required=False)
    units.add_argument("--manifest", required=True, type=Path, help="CSV (fileid,path,num_samples), TSV or JSONL")
    units.add_argument("--alignments", required=True, type=Path, help="one line per file: fileid phone phone ...")
    units.add_argument("--layer", help="a layer number, a comma-separated list, or 'all' (every codebook layer)")
    units.add_argument("--kmeans", type=int, default=None, metavar="K", help="cluster the features into K units")
    units.add_argument("--baseline", choices=["mfcc"], help="score k-means units of MFCCs (needs --kmeans) instead")
    units.add_argument("--seed", type=int, default=0, help="the k-means seed")
    units.add_argument("--json", action="store_true", help="one JSON line per layer")

    abx = commands.add_parser(
        "abx", formatter_class=HelpFormatter, help="ABX error within or across speakers (in JAX, or with fastabx)",
        description="The ABX error of a layer's features, codebook units (--units) or codebook probabilities "
        "(--probabilities) on a ZeroSpeech item file, or of features on disk (--features DIR): within or across "
        "speakers, within or any context, computed in JAX (or by fastabx with --backend fastabx). Needs --item, and "
        "--checkpoint, --manifest and --layer, or --features.",
    )  # fmt: skip
    add_abx_arguments(abx)

    plot = commands.add_parser(
        "plot", formatter_class=HelpFormatter, help="PNG figures: curves, codebooks, phone-units",
        description="One PNG figure. curves: the training curves of --workdir (loss, perplexities, dev PNMI, "
        "learning rate, gradient norm). codebooks: the codebook usage of --checkpoint, on --manifest's files "
        "(with --alignments, on their aligned frames, as evaluate units counts), or without one the running "
        "counts of training less their initial value. phone-units: P(phone | unit) at --layer, on --manifest "
        "and --alignments.",
    )  # fmt: skip
    plot.add_argument("what", choices=["curves", "codebooks", "phone-units"], help="which figure")
    plot.add_argument("--output", required=True, type=Path, help="the PNG file to write")
    plot.add_argument("--workdir", type=Path, help="curves: the training workdir")
    add_checkpoint(plot, required=False)
    plot.add_argument("--manifest", type=Path, help="codebooks (optional) and phone-units: the files")
    plot.add_argument("--alignments", type=Path, help="codebooks (optional) and phone-units: their alignments")
    plot.add_argument("--layer", help="phone-units: the codebook layer")
    return parser


def say(line: str) -> None:
    """What a command tells besides its results: on stderr."""
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to a sub-command; one line and a non-zero exit on bad input."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error():
        if args.command == "units":
            from spidr_jax.evaluate.units_command import units_command  # noqa: PLC0415 (loads JAX)

            if args.baseline is None and (args.checkpoint is None or args.layer is None):
                raise UsageError("units needs --checkpoint and --layer (or --baseline mfcc)")
            units_command(args, say)
        elif args.command == "abx":
            abx_command.run(args, say)
        else:
            from spidr_jax.evaluate.plot_command import plot_command  # noqa: PLC0415

            say(f"wrote {plot_command(args, say)}")
