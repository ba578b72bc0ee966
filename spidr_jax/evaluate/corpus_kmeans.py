"""K-means on a model's features of a whole corpus, computed batch by batch and never held in memory.

The corpus is this process's share of the manifest (split as extraction splits it), planned once into padded
batches; one batch of features is what `fit_streaming_kmeans` takes at a step. Every pass runs the model over the
same batches in the same order, so a fit resumes from its saved state by skipping the batches already seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.data.padded_batches import PaddedBatch
from spidr_jax.evaluate.kmeans_state import remove_state
from spidr_jax.evaluate.streaming_kmeans import StreamingKMeans, fit_streaming_kmeans, jax_process_group
from spidr_jax.extract.inference import Batching, model_outputs, plan
from spidr_jax.models import DinoSR
from spidr_jax.models.layer_outputs import features_at
from spidr_jax.storage.kmeans_file import KMeansFile, write_kmeans_file


class CorpusFeatures:
    """A feature source over rows: `source(epoch, start)` yields the features of padded batches `start`, ...

    Files that fail (unreadable, too short) are counted in `failed` and add nothing.
    """

    def __init__(self, model: DinoSR, rows: list[ManifestRow], layer: int, batching: Batching) -> None:
        self.model, self.rows, self.batching = model, rows, batching
        self.output = features_at(layer)
        self.batches: list[PaddedBatch] = plan(rows, batching, jax.local_device_count())[0]
        self.failed: dict[str, str] = {}

    def __call__(self, epoch: int, start: int) -> Iterator[np.ndarray]:
        """The features of batches `start`, `start + 1`, ... (the same every epoch), one array per batch."""
        del epoch
        batches = self.batches[start:]
        results = model_outputs(self.model, self.rows, self.output, self.batching, batches=batches)
        for batch in batches:
            values = []
            for _ in batch.indices:
                result = next(results)
                if result.error is not None:
                    self.failed[self.rows[result.index].location] = result.error
                else:
                    values.append(result.value)
            dim = self.model.config.encoder_embed_dim
            yield np.concatenate(values) if values else np.zeros((0, dim), np.float32)


def fit_corpus_kmeans(
    model: DinoSR,
    rows: list[ManifestRow],
    *,
    layer: int,
    k: int,
    output: Path,
    checkpoint: str,
    seed: int = 0,
    epochs: int = 3,
    batching: Batching | None = None,
    progress: bool = True,
) -> tuple[StreamingKMeans, dict[str, str]]:
    """Fit k-means on `rows`' features of `layer` (this process's share) and write `output` (`km.npz`).

    The state is kept in `<output>.state/` while the fit runs, and removed once `output` is written: a killed fit
    continues where it was. Returns the fit and the files that failed (path: reason).
    """
    source = CorpusFeatures(model, rows, layer, batching or Batching())
    state_dir = output.with_name(output.name + ".state")
    group = jax_process_group()
    fitted = fit_streaming_kmeans(
        source,
        k,
        seed=seed,
        epochs=epochs,
        group=group,
        state_dir=state_dir,
        progress=progress,
        total_batches=len(source.batches),
    )
    if group.index == 0:
        write_kmeans_file(output, KMeansFile(fitted.centroids, layer, checkpoint, fitted.inertia, fitted.frames))
    remove_state(state_dir, index=group.index, count=group.count)  # each process its own, once km.npz is out
    return fitted, source.failed
