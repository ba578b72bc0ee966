"""Streaming k-means schedules against scikit-learn's ``KMeans`` on the same in-memory features.

    python -m bench.kmeans_quality              # 60,000 x 48 speech-like features, K = 256

Features: runs of 10 frames around 300 random centres with per-centre scales, shifted per speaker, 300 frames per
utterance, 16 utterances per batch in an order drawn per epoch (batches are correlated, as a corpus's are). Prints,
for each schedule, the inertia of the final centroids over all features divided by scikit-learn's (1 = as good).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spidr_jax.evaluate.streaming_kmeans import fit_streaming_kmeans


def utterances(seed: int, count: int, dim: int) -> list[np.ndarray]:
    """Speaker-shifted runs of frames around random centres."""
    rng = np.random.default_rng(seed)
    centres, offsets = rng.normal(size=(300, dim)), 0.5 * rng.normal(size=(40, dim))
    scales = rng.uniform(0.3, 1.0, size=(300, dim))
    result = []
    for _ in range(count):
        labels = np.repeat(rng.integers(0, 300, 30), 10)
        noise = scales[labels] * rng.normal(size=(300, dim))
        result.append((centres[labels] + offsets[rng.integers(40)] + noise).astype(np.float32))
    return result


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid, in blocks."""
    total = 0.0
    for i in range(0, len(x), 8192):
        block = x[i : i + 8192].astype(np.float64)
        d2 = (block * block).sum(1)[:, None] - 2 * block @ centroids.T + (centroids.astype(np.float64) ** 2).sum(1)
        total += float(np.maximum(d2.min(1), 0).sum())
    return total


def main() -> None:
    """Print each schedule's inertia relative to scikit-learn's."""
    from sklearn.cluster import KMeans

    parser = argparse.ArgumentParser(prog="python -m bench.kmeans_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=256, help="clusters")
    parser.add_argument("--utterances", type=int, default=200, help="utterances of 300 frames")
    parser.add_argument("--dim", type=int, default=48, help="feature dimension")
    args = parser.parse_args()
    utts = utterances(0, args.utterances, args.dim)
    x = np.concatenate(utts)

    def source(epoch: int, start: int):  # noqa: ANN202 - a generator of batches
        order = np.random.default_rng([7, epoch]).permutation(len(utts))
        for i in range(start * 16, len(order), 16):
            yield np.concatenate([utts[j] for j in order[i : i + 16]])

    began = time.perf_counter()
    reference = KMeans(n_clusters=args.k, random_state=0).fit(x)
    print(f"scikit-learn KMeans: {len(x):,} x {args.dim}, K={args.k}: {reference.n_iter_} iterations, "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip
    schedules = [(1, 1, 100), (3, 1, 100), (3, 0, 100), (3, 3, 100), (5, 1, 100), (3, 1, 0), (10, 1, 0), (10, 0, 0)]
    for epochs, minibatch, sample_iters in schedules:
        began = time.perf_counter()
        model = fit_streaming_kmeans(source, args.k, epochs=epochs, minibatch_epochs=minibatch,
                                     sample_iters=sample_iters)  # fmt: skip
        ratio = inertia(x, model.centroids) / reference.inertia_
        sample = "Lloyd on the sample" if sample_iters else "k-means++ only"
        print(f"{epochs:2d} epochs, {minibatch} mini-batch, {sample:19s}: {ratio:.4f} "
              f"({time.perf_counter() - began:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
