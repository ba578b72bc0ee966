"""`python -m spidr_jax.evaluate units`: the quality of a model's units (or of a baseline's) against phone alignments.

Units: the model's codebook units of some layers, k-means units of a layer's features (`--kmeans K`, fitted on the
evaluated files), or k-means units of MFCCs (`--baseline mfcc --kmeans K`, no model). Before anything is computed,
every alignment is checked against its file's frames. The command says which checkpoint it used and how many
files it scored, skipped (no alignment) and failed (unreadable, too short), and exits 1 when it could score none.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable

import numpy as np

from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.scan import at_model_rate
from spidr_jax.errors import InputError, UsageError
from spidr_jax.evaluate.alignments import check_alignment_lengths, pair_units_with_alignments, read_alignments
from spidr_jax.evaluate.baseline import mfcc_units
from spidr_jax.evaluate.mfcc import num_mfcc_frames
from spidr_jax.evaluate.model_units import collect_outputs, kmeans_units
from spidr_jax.evaluate.units_quality import units_quality
from spidr_jax.extract.inference import Batching
from spidr_jax.models import DinoSR
from spidr_jax.models.extractor import conv_output_lengths
from spidr_jax.models.layer_outputs import check_layer, features_at, units_of_codebooks
from spidr_jax.pretrained import describe_checkpoint, load_pretrained

BATCHING = Batching(resample=True)  # audio at any rate and channels, as extraction reads it
UnitsByFile = dict[str, np.ndarray]


def parse_layers(text: str, model: DinoSR) -> list[int]:
    """'all', '6' or '4,5,6' -> layer numbers."""
    if text == "all":
        return list(model.config.codebook_layers)
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--layer expects a number, a comma-separated list or 'all', got {text!r}") from None


def model_units(
    args: argparse.Namespace, rows: list, alignments: dict, say: Callable[[str], None]
) -> tuple[dict[str, UnitsByFile], dict[str, str], int, str]:
    """({layer: units by file}, failed files, number of units, what the units are) of the model's units."""
    model = load_pretrained(args.checkpoint, step=args.step, teacher=False)
    say(f"checkpoint: {describe_checkpoint(args.checkpoint, model)}")
    layers_config = model.config.extractor_conv_layer_config
    check_alignment_lengths(
        rows, alignments, lambda n: conv_output_lengths(n, layers_config), where=str(args.alignments)
    )
    layers = parse_layers(args.layer, model)
    for layer in layers:
        check_layer(model.config, layer, units=args.kmeans is None)
    if args.kmeans is None:
        per_file, failed = collect_outputs(model, rows, units_of_codebooks, BATCHING)
        index = {layer: i for i, layer in enumerate(model.config.codebook_layers)}
        units = {layer: {f: values[:, index[layer]] for f, values in per_file.items()} for layer in layers}
        return units, failed, model.config.codebook_size, "codebook"
    units, failed = {}, {}
    for layer in layers:
        features, failed = collect_outputs(model, rows, features_at(layer), BATCHING)
        units[layer] = kmeans_units(features, args.kmeans, seed=args.seed)[0] if features else {}
    return units, failed, args.kmeans, f"k-means {args.kmeans}"


def baseline_units(
    args: argparse.Namespace, rows: list, alignments: dict
) -> tuple[dict[str, UnitsByFile], dict[str, str], int, str]:
    """The same for k-means units of MFCCs (`--baseline mfcc`)."""
    if args.kmeans is None:
        raise UsageError("--baseline mfcc needs --kmeans K (the number of clusters)")
    check_alignment_lengths(rows, alignments, num_mfcc_frames, where=str(args.alignments))
    units, failed = mfcc_units([row for row in rows if row.fileid in alignments], args.kmeans, seed=args.seed)
    return {"mfcc": units}, failed, args.kmeans, f"MFCC k-means {args.kmeans}"


def coverage(units: UnitsByFile, alignments: dict, failed: dict[str, str], shown: int = 3) -> tuple[int, str]:
    """(files scored, the line saying what was scored, skipped and failed)."""
    scored = [fileid for fileid in units if fileid in alignments]
    skipped = [fileid for fileid in units if fileid not in alignments]
    line = f"scored {len(scored)} files"
    if skipped:
        more = f", ... ({len(skipped) - shown} more)" if len(skipped) > shown else ""
        line += f"; {len(skipped)} skipped (no alignment: {', '.join(skipped[:shown])}{more})"
    if failed:
        listed = "; ".join(f"{location}: {reason}" for location, reason in list(failed.items())[:shown])
        more = f"; ... ({len(failed) - shown} more)" if len(failed) > shown else ""
        line += f"; {len(failed)} failed ({listed}{more})"
    return len(scored), line


def units_command(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Print the unit quality per layer (one JSON line per layer with --json)."""
    rows, _ = at_model_rate(read_manifest(args.manifest))
    alignments = read_alignments(args.alignments)
    if args.baseline == "mfcc":
        units, failed, num_units, source = baseline_units(args, rows, alignments)
    else:
        units, failed, num_units, source = model_units(args, rows, alignments, say)
    scored, line = coverage(next(iter(units.values())), alignments, failed)
    say(line)
    if not scored:
        raise InputError(f"no file could be scored ({line})")
    for layer, by_file in units.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the files without alignment are said above
            quality = units_quality(pair_units_with_alignments(alignments, by_file), num_units=num_units)
        if args.json:
            print(json.dumps({"layer": layer, "units": source} | quality._asdict()))
        else:
            values = "  ".join(f"{name} {value:.4g}" for name, value in quality._asdict().items())
            print(f"layer {layer} ({source} units): {values}")
