"""`python -m spidr_jax.evaluate plot`: training curves, codebook usage, the phone-vs-unit matrix, as PNG files.

Every title says what is shown: the workdir and steps of the curves; the data (a manifest's files, or the running
counts of training), the layers and the checkpoint's step of the codebook usage; the layer, step and checkpoint of
the matrix. The figures' numbers are also printed.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.scan import at_model_rate
from spidr_jax.errors import UsageError
from spidr_jax.evaluate.alignments import pair_units_with_alignments, read_alignments
from spidr_jax.evaluate.model_units import collect_outputs
from spidr_jax.evaluate.units_command import BATCHING
from spidr_jax.evaluate.units_quality import count_matrix, phone_unit_probabilities
from spidr_jax.models import DinoSR
from spidr_jax.models.layer_outputs import check_layer, units_of_codebooks
from spidr_jax.pretrained import describe_checkpoint, load_pretrained

NEEDS = {  # what each kind of plot needs
    "curves": ("workdir",),
    "codebooks": ("checkpoint",),
    "phone-units": ("checkpoint", "manifest", "alignments", "layer"),
}


def codebook_counts(model: DinoSR, args: argparse.Namespace) -> tuple[dict[int, np.ndarray], str]:
    """Each codebook layer's usage counts, and what they count.

    On a manifest: how often each unit is the argmax on its files' frames (with --alignments, on the aligned
    frames, which `evaluate units` counts). Without one: the codebooks' running counts, less the 1 they start at.
    """
    layers = model.config.codebook_layers
    size = model.config.codebook_size
    if args.manifest is None:
        counts = np.asarray(model.codebooks.counts[...]) - 1.0
        if not counts.any():  # a model that never trained: nothing to show but the initial counts
            return dict(zip(layers, counts + 1.0, strict=True)), "running counts, never updated (their initial value)"
        return dict(zip(layers, counts, strict=True)), "training's running counts, less their initial value"
    rows, _ = at_model_rate(read_manifest(args.manifest))
    per_file, _ = collect_outputs(model, rows, units_of_codebooks, BATCHING)
    if args.alignments is None:
        units = np.concatenate(list(per_file.values())) if per_file else np.zeros((0, len(layers)), np.int32)
        counts = {layer: np.bincount(units[:, i], minlength=size) for i, layer in enumerate(layers)}
        return counts, f"{len(per_file)} files of {args.manifest}"
    alignments = read_alignments(args.alignments)
    counts = {}
    for i, layer in enumerate(layers):
        by_file = {fileid: values[:, i] for fileid, values in per_file.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix, _ = count_matrix(pair_units_with_alignments(alignments, by_file), num_units=size, repeat=2)
        counts[layer] = matrix.sum(axis=0)
    return counts, f"the aligned frames of {args.manifest}"


def plot_command(args: argparse.Namespace, say: Callable[[str], None]) -> Path:
    """Write one PNG; its path."""
    from spidr_jax.evaluate import plots  # noqa: PLC0415 (needs the optional matplotlib)

    missing = [f"--{name}" for name in NEEDS[args.what] if getattr(args, name) is None]
    if missing:
        raise UsageError(f"plot {args.what} needs {', '.join(missing)}")
    if args.what == "curves":
        return plots.plot_training_curves(args.workdir, args.output)
    model = load_pretrained(args.checkpoint, step=args.step, teacher=False)
    described = describe_checkpoint(args.checkpoint, model)
    say(f"checkpoint: {described}")
    if args.what == "codebooks":
        counts, data = codebook_counts(model, args)
        for layer, layer_counts in counts.items():
            perplexity, active = plots.usage(layer_counts)
            say(f"layer {layer}: perplexity {perplexity:.2f}, active {active}/{len(layer_counts)} ({data})")
        title = f"Codebook usage: {data}\n{described}"
        return plots.plot_codebook_usage(counts, args.output, title=title)
    layer = int(args.layer)
    check_layer(model.config, layer, units=True)
    rows, _ = at_model_rate(read_manifest(args.manifest))
    per_file, _ = collect_outputs(model, rows, units_of_codebooks, BATCHING)
    index = model.config.codebook_layers.index(layer)
    units = {fileid: values[:, index] for fileid, values in per_file.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = pair_units_with_alignments(read_alignments(args.alignments), units)
    proba, phones, order = phone_unit_probabilities(data, num_units=model.config.codebook_size, only_active=True)
    title = f"P(phone | unit), layer {layer}, {len(data)} files of {args.manifest}\n{described}"
    return plots.plot_phone_unit_matrix(proba, phones, args.output, unit_order=order, title=title)
