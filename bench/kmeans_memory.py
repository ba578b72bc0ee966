"""Peak memory of the streaming k-means fit on a synthetic stream of features: bounded by the batch, not the corpus.

    python -m bench.kmeans_memory --hours 10     # 1.8 M frames of 768-dim features at 50 Hz (5.5 GB as float32)

The stream draws each batch afresh (random features, ``--batch-seconds`` of audio per batch), so nothing but the
fit holds features. Prints the resident memory after start-up (JAX loaded) and at the end (peak), and the time.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from spidr_jax.evaluate.streaming_kmeans import fit_streaming_kmeans

FRAME_RATE = 50


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Fit on the synthetic stream and print the memory figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.kmeans_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0, help="audio hours the stream stands for")
    parser.add_argument("--dim", type=int, default=768, help="feature dimension")
    parser.add_argument("--k", type=int, default=256, help="clusters")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the stream after the initial sample")
    parser.add_argument("--batch-seconds", type=float, default=120.0, help="audio seconds per batch")
    args = parser.parse_args()

    frames = int(args.hours * 3600 * FRAME_RATE)
    per_batch = int(args.batch_seconds * FRAME_RATE)
    num_batches = -(-frames // per_batch)

    def source(epoch: int, start: int):  # noqa: ANN202 - a generator of batches
        for index in range(start, num_batches):
            rng = np.random.default_rng([epoch, index])
            rows = min(per_batch, frames - index * per_batch)
            yield rng.standard_normal((rows, args.dim), dtype=np.float32)

    # Warm up JAX (and its compile of one batch shape) before the baseline reading.
    fit_streaming_kmeans(lambda _e, s: iter([np.ones((args.k, args.dim), np.float32)][s:]), args.k, epochs=1)
    baseline = peak_rss_mib()
    start = time.perf_counter()
    model = fit_streaming_kmeans(source, args.k, epochs=args.epochs, total_batches=num_batches)
    elapsed = time.perf_counter() - start
    corpus_gib = frames * args.dim * 4 / 2**30
    print(f"{args.hours:g} h = {frames:,} frames x {args.dim} ({corpus_gib:.1f} GiB as float32), k={args.k}")
    print(f"{num_batches} batches of {per_batch:,} frames, init sample {model.init_sample:,}, {args.epochs} epochs")
    print(f"peak RSS after start-up: {baseline:,.0f} MiB; peak RSS at the end: {peak_rss_mib():,.0f} MiB")
    print(f"time: {elapsed:,.0f} s; inertia per epoch: {', '.join(f'{v:.4g}' for v in model.inertia)}")


if __name__ == "__main__":
    main()
