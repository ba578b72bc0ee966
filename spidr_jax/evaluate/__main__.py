"""Evaluate units and features of a model: unit quality against phone alignments, ABX, and plots.

    python -m spidr_jax.evaluate units --checkpoint DIR --manifest dev.csv --alignments dev.alignments.txt --layer 6
    python -m spidr_jax.evaluate units ... --layer 6 --kmeans 256       # k-means units of continuous features
    python -m spidr_jax.evaluate abx --checkpoint DIR --manifest dev.csv --item dev.item --layer 6 [--units]
    python -m spidr_jax.evaluate plot curves --workdir runs/demo --output curves.png
    python -m spidr_jax.evaluate plot codebooks --checkpoint DIR --output codebooks.png
    python -m spidr_jax.evaluate plot phone-units --checkpoint DIR --manifest M --alignments A --layer 6 --output m.png

DIR is a converted model directory or a training workdir. `--layer` takes a layer number, a comma-separated
list, or `all` (every codebook layer) for codebook units.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from spidr_jax.cli_errors import exit_on_error
from spidr_jax.data.manifest import ManifestError, read_manifest
from spidr_jax.errors import MissingDependencyError
from spidr_jax.evaluate.alignments import AlignmentFormatError, pair_units_with_alignments, read_alignments
from spidr_jax.evaluate.model_units import (
    codebook_layers,
    codebook_units,
    codebook_units_quality,
    kmeans_units_quality,
)
from spidr_jax.evaluate.units_quality import phone_unit_probabilities
from spidr_jax.extraction import ExtractionError, check_layer
from spidr_jax.pretrained import load_pretrained

ERRORS = (AlignmentFormatError, ExtractionError, ManifestError, ValueError, ImportError)


def parse_layers(text: str, model) -> list[int]:  # noqa: ANN001
    """'all', '6' or '4,5,6' -> layer numbers."""
    if text == "all":
        return codebook_layers(model)
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ExtractionError(f"--layer expects a number, a comma-separated list or 'all', got {text!r}") from None


def units_command(args: argparse.Namespace) -> None:
    """Print unit quality per layer (one JSON line per layer with --json)."""
    model = load_pretrained(args.checkpoint)
    rows = read_manifest(args.manifest)
    alignments = read_alignments(args.alignments)
    layers = parse_layers(args.layer, model)
    for layer in layers:
        check_layer(model, layer, units=args.kmeans is None)
    if args.kmeans is None:
        results = codebook_units_quality(model, rows, alignments, layers=layers)
    else:
        results = {
            layer: kmeans_units_quality(model, rows, alignments, layer=layer, k=args.kmeans, seed=args.seed)[0]
            for layer in layers
        }
    source = f"k-means {args.kmeans}" if args.kmeans else "codebook"
    for layer, quality in results.items():
        if args.json:
            print(json.dumps({"layer": layer, "units": source} | quality._asdict()))
        else:
            values = "  ".join(f"{name} {value:.4g}" for name, value in quality._asdict().items())
            print(f"layer {layer} ({source} units): {values}")


def abx_command(args: argparse.Namespace) -> None:
    """Print the ABX error rate (JAX by default, or fastabx)."""
    from spidr_jax.evaluate import abx_command as abx  # noqa: PLC0415

    abx.run(args)


def plot_command(args: argparse.Namespace) -> None:
    """Write one PNG."""
    from spidr_jax.evaluate import plots  # noqa: PLC0415 (needs the optional matplotlib)

    if args.what == "curves":
        if args.workdir is None:
            raise ExtractionError("plot curves needs --workdir")
        out = plots.plot_training_curves(args.workdir, args.output)
    else:
        if args.checkpoint is None:
            raise ExtractionError(f"plot {args.what} needs --checkpoint")
        model = load_pretrained(args.checkpoint)
        if args.what == "codebooks":
            counts = model.codebooks.counts[...]
            out = plots.plot_codebook_usage(dict(zip(codebook_layers(model), counts, strict=True)), args.output)
        else:
            if not (args.manifest and args.alignments and args.layer):
                raise ExtractionError("plot phone-units needs --manifest, --alignments and --layer")
            layer = int(args.layer)
            check_layer(model, layer, units=True)
            units = codebook_units(model, read_manifest(args.manifest))[layer]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = pair_units_with_alignments(read_alignments(args.alignments), units)
            proba, phones, order = phone_unit_probabilities(
                data, num_units=model.config.codebook_size, only_active=True
            )
            out = plots.plot_phone_unit_matrix(proba, phones, args.output, unit_order=order)
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a subcommand."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    units = commands.add_parser("units", help="phone purity, cluster purity, PNMI, perplexity, codewords, bitrate")
    units.add_argument("--checkpoint", required=True, type=Path)
    units.add_argument("--manifest", required=True, type=Path)
    units.add_argument("--alignments", required=True, type=Path, help="one line per file: fileid phone phone ...")
    units.add_argument("--layer", required=True, help="layer number, comma-separated list, or 'all'")
    units.add_argument("--kmeans", type=int, default=None, metavar="K", help="cluster features into K units")
    units.add_argument("--seed", type=int, default=0, help="k-means seed")
    units.add_argument("--json", action="store_true", help="one JSON line per layer")
    abx = commands.add_parser("abx", prog="python -m spidr_jax.evaluate abx",
                              help="ABX error within or across speakers, of a model or of .npy features",
                              description="ABX phone discrimination (ZeroSpeech / Libri-Light), computed in JAX "
                                          "(or by fastabx with --backend fastabx).")  # fmt: skip
    from spidr_jax.evaluate.abx_command import add_arguments as add_abx_arguments  # noqa: PLC0415

    add_abx_arguments(abx)
    plot = commands.add_parser("plot", help="PNG figures")
    plot.add_argument("what", choices=["curves", "codebooks", "phone-units"])
    plot.add_argument("--output", required=True, type=Path)
    plot.add_argument("--workdir", type=Path)
    plot.add_argument("--checkpoint", type=Path)
    plot.add_argument("--manifest", type=Path)
    plot.add_argument("--alignments", type=Path)
    plot.add_argument("--layer")
    args = parser.parse_args(argv)
    command = {"units": units_command, "abx": abx_command, "plot": plot_command}[args.command]
    with exit_on_error((*ERRORS, MissingDependencyError)):
        command(args)


if __name__ == "__main__":
    main()
