"""A baseline to beat: k-means units of MFCCs, the features HuBERT's first iteration clusters.

39-dimensional MFCCs with deltas (`spidr_jax.evaluate.mfcc`), every other 10 ms frame (50 Hz, like the models'
units), clustered with k-means on the evaluated files themselves and scored with the same metrics as a model's
units. A model whose units do not beat these has learned little about phones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spidr_jax.data.audio import AudioError, read_audio
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.evaluate.alignments import pair_units_with_alignments
from spidr_jax.evaluate.kmeans import fit_kmeans
from spidr_jax.evaluate.mfcc import mfcc_features
from spidr_jax.evaluate.units_quality import UnitsQuality, units_quality


def mfcc_units(rows: Sequence[ManifestRow], k: int, *, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """MFCC k-means units of every readable file ({fileid: (frames,) int32}) and the files that failed."""
    features, failed = {}, {}
    for row in rows:
        try:
            values = mfcc_features(read_audio(row, resample=True))
        except AudioError as error:
            failed[row.location] = error.reason
            continue
        if len(values):
            features[row.fileid] = values
        else:
            failed[row.location] = "shorter than one 25 ms MFCC frame"
    if not features:
        return {}, failed
    kmeans = fit_kmeans(np.concatenate(list(features.values())), k, seed=seed)
    return {fileid: kmeans.predict(values) for fileid, values in features.items()}, failed


def mfcc_units_quality(
    rows: Sequence[ManifestRow], alignments: Mapping[str, Sequence[str]], k: int, *, seed: int = 0
) -> UnitsQuality:
    """The unit quality of MFCC k-means units (K = `k`) of the aligned files."""
    aligned = [row for row in rows if row.fileid in alignments]
    units, _ = mfcc_units(aligned, k, seed=seed)
    return units_quality(pair_units_with_alignments(alignments, units), num_units=k)
