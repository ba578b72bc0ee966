"""Unit quality of a model on an aligned corpus: its codebook units, or k-means units of a layer's features."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.errors import InputError
from spidr_jax.evaluate.alignments import pair_units_with_alignments
from spidr_jax.evaluate.kmeans import KMeansModel, fit_kmeans
from spidr_jax.evaluate.units_quality import UnitsQuality, units_quality
from spidr_jax.extract.inference import DEFAULT_BATCHING, Batching, model_outputs
from spidr_jax.models import DinoSR
from spidr_jax.models.layer_outputs import OutputFunction, features_at, units_of_codebooks
from spidr_jax.progress import track


def collect_outputs(
    model: DinoSR, rows: Sequence[ManifestRow], output: OutputFunction, batching: Batching, *, progress: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each readable row's output by fileid, and the rows that failed (location: reason); with a progress display."""
    rows = list(rows)
    out, failed = {}, {}
    results = model_outputs(model, rows, output, batching)
    for result in track(results, total=len(rows), description="running the model", disable=not progress):
        if result.error is None:
            out[rows[result.index].fileid] = result.value
        else:
            failed[rows[result.index].location] = result.error
    return out, failed


def collect(model: DinoSR, rows: Sequence[ManifestRow], output: OutputFunction, batching: Batching) -> dict:
    """Map each readable row's fileid to its output (unreadable ones are left out with a one-line warning)."""
    out, failed = collect_outputs(model, rows, output, batching, progress=False)
    if failed:
        listed = "; ".join(f"{location}: {reason}" for location, reason in list(failed.items())[:5])
        warnings.warn(f"{len(failed)} files could not be read: {listed}", stacklevel=2)
    return out


def codebook_units(
    model: DinoSR, rows: Sequence[ManifestRow], batching: Batching = DEFAULT_BATCHING
) -> dict[int, dict]:
    """{layer: {fileid: units (T,)}} for every codebook layer, from one pass over the files."""
    per_file = collect(model, rows, units_of_codebooks, batching)
    return {
        layer: {fileid: units[:, i] for fileid, units in per_file.items()}
        for i, layer in enumerate(model.config.codebook_layers)
    }


def codebook_units_quality(
    model: DinoSR,
    rows: Sequence[ManifestRow],
    alignments: Mapping[str, Sequence[str]],
    *,
    layers: Sequence[int] | None = None,
    batching: Batching = DEFAULT_BATCHING,
) -> dict[int, UnitsQuality]:
    """Unit quality of the model's own codebook units, per layer (all codebook layers by default)."""
    codebook_layers = list(model.config.codebook_layers)
    chosen = codebook_layers if layers is None else list(layers)
    units = codebook_units(model, rows, batching)
    missing = sorted(set(chosen) - set(units))
    if missing:
        raise InputError(f"layers {missing} have no codebook; codebook layers are {codebook_layers}")
    size = model.config.codebook_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files without alignment: normal for a subset, counted by the caller
        return {layer: units_quality(pair_units_with_alignments(alignments, units[layer]), num_units=size)
                for layer in chosen}  # fmt: skip


def kmeans_units_quality(
    model: DinoSR,
    rows: Sequence[ManifestRow],
    alignments: Mapping[str, Sequence[str]],
    *,
    layer: int,
    k: int,
    seed: int = 0,
    batching: Batching = DEFAULT_BATCHING,
) -> tuple[UnitsQuality, KMeansModel]:
    """Unit quality of k-means clusters of one layer's features (fitted on these files)."""
    units, kmeans = kmeans_units(collect(model, rows, features_at(layer), batching), k, seed=seed)
    return units_quality(pair_units_with_alignments(alignments, units), num_units=k), kmeans


def kmeans_units(features: Mapping[str, np.ndarray], k: int, *, seed: int = 0) -> tuple[dict, KMeansModel]:
    """({fileid: units (T,)}, the k-means) of a k-means fitted on the frames of all these files together."""
    kmeans = fit_kmeans(np.concatenate(list(features.values())), k, seed=seed)
    return {fileid: kmeans.predict(values) for fileid, values in features.items()}, kmeans
