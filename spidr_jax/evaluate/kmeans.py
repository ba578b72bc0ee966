"""K-means on continuous features, in JAX.

Initialisation is k-means++ on a random subset of the points (``64 * k`` by default); training is either
full-batch Lloyd iterations or mini-batch k-means. Distances are computed chunk by chunk (``chunk_size`` rows
against all centroids), so the memory overhead stays at ``chunk_size x k`` floats whatever the number of points:
a few million 768-dim frames fit as long as the features themselves fit in memory. Everything is float32, with
full-precision matrix products (no TF32/bfloat16 shortcuts) so that assignments do not depend on the accelerator.

An empty cluster keeps its previous centroid.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.errors import InputError

__all__ = ["KMeansModel", "fit_kmeans", "kmeans_plusplus"]

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class KMeansModel:
    """Trained k-means: ``centroids`` (k, dim) float32, the final ``inertia`` and its value after each iteration."""

    centroids: np.ndarray
    inertia: float = float("nan")
    inertia_history: tuple[float, ...] = ()

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    def predict(self, features: np.ndarray, *, chunk_size: int = 8192) -> np.ndarray:
        """Index of the nearest centroid (squared Euclidean distance) of each row of ``features``, as int32."""
        x = _as_features(features, self.centroids.shape[1])
        if len(x) == 0:
            return np.zeros(0, dtype=np.int32)
        labels = _assign(jnp.asarray(x), jnp.asarray(self.centroids), min(chunk_size, len(x)))
        return np.asarray(labels, dtype=np.int32)

    def save(self, path: str | Path) -> None:
        """Save to ``.npz`` (centroids and inertia history) or ``.npy`` (centroids only)."""
        path = Path(path)
        if path.suffix == ".npy":
            np.save(path, self.centroids)
        elif path.suffix == ".npz":
            np.savez(path, centroids=self.centroids, inertia=self.inertia, history=np.asarray(self.inertia_history))
        else:
            raise InputError(f"K-means models are saved as .npy or .npz, not {path.suffix!r}: {path}")

    @classmethod
    def load(cls, path: str | Path) -> KMeansModel:
        """Load a model written by :meth:`save` (or any (k, dim) array of centroids stored as ``.npy``)."""
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path) as archive:
                return cls(
                    centroids=archive["centroids"].astype(np.float32),
                    inertia=float(archive["inertia"]),
                    inertia_history=tuple(float(v) for v in archive["history"]),
                )
        centroids = np.load(path)
        if centroids.ndim != 2:
            raise InputError(f"{path}: expected (k, dim) centroids, got shape {centroids.shape}")
        return cls(centroids=centroids.astype(np.float32))


def _as_features(features: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Features as a C-contiguous float32 (N, D) array, checked."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"Expected (N, D) features, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"Features have dimension {x.shape[1]}, the centroids {dim}")
    if not np.isfinite(x).all():
        raise InputError("Features contain NaN or infinite values")
    return x


def _nearest(x: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centroid of each row and the squared distance to it."""
    x_sq = jnp.sum(x * x, axis=1)
    c_sq = jnp.sum(centroids * centroids, axis=1)
    d2 = x_sq[:, None] - 2.0 * jnp.matmul(x, centroids.T, precision=_HIGHEST) + c_sq[None, :]
    labels = jnp.argmin(d2, axis=1)
    return labels, jnp.maximum(jnp.take_along_axis(d2, labels[:, None], axis=1)[:, 0], 0.0)


def _chunk(x: jax.Array, i: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rows of chunk ``i`` without padding a copy of ``x``.

    The last chunk is shifted back to end at row N; the rows it shares with the previous chunk are masked out.
    """
    start = jnp.minimum(i * chunk, x.shape[0] - chunk)
    rows = jax.lax.dynamic_slice_in_dim(x, start, chunk)
    valid = start + jnp.arange(chunk) >= i * chunk
    return rows, start, valid


@partial(jax.jit, static_argnames=("chunk",))
def _assign(x: jax.Array, centroids: jax.Array, chunk: int) -> jax.Array:
    """Nearest centroid of every row, computed chunk by chunk."""
    num_chunks = -(-x.shape[0] // chunk)

    def body(i: jax.Array, labels: jax.Array) -> jax.Array:
        rows, start, _ = _chunk(x, i, chunk)
        # Overlapping rows of the last chunk get the same labels again, so no masking is needed.
        return jax.lax.dynamic_update_slice_in_dim(labels, _nearest(rows, centroids)[0].astype(jnp.int32), start, 0)

    return jax.lax.fori_loop(0, num_chunks, body, jnp.zeros(x.shape[0], dtype=jnp.int32))


@partial(jax.jit, static_argnames=("chunk",))
def _statistics(x: jax.Array, centroids: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-cluster sums and counts of the points assigned to each centroid, and the inertia."""
    k, dim = centroids.shape
    num_chunks = -(-x.shape[0] // chunk)

    def body(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        sums, counts, inertia = carry
        rows, _, valid = _chunk(x, i, chunk)
        labels, d2 = _nearest(rows, centroids)
        weight = valid.astype(jnp.float32)
        sums = sums + jax.ops.segment_sum(rows * weight[:, None], labels, num_segments=k)
        counts = counts + jax.ops.segment_sum(weight, labels, num_segments=k)
        return sums, counts, inertia + jnp.sum(d2 * weight)

    init = (jnp.zeros((k, dim), jnp.float32), jnp.zeros(k, jnp.float32), jnp.zeros((), jnp.float32))
    return jax.lax.fori_loop(0, num_chunks, body, init)


@jax.jit
def _lloyd_update(centroids: jax.Array, sums: jax.Array, counts: jax.Array) -> jax.Array:
    """New centroids as cluster means; empty clusters stay where they were."""
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)


@jax.jit
def _minibatch_update(
    centroids: jax.Array, seen: jax.Array, batch: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One mini-batch step: each centroid moves to the running mean of all points it has been assigned."""
    k = centroids.shape[0]
    labels, d2 = _nearest(batch, centroids)
    sums = jax.ops.segment_sum(batch, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(batch.shape[0], jnp.float32), labels, num_segments=k)
    seen = seen + counts
    step = counts[:, None] / jnp.maximum(seen, 1.0)[:, None]
    batch_means = sums / jnp.maximum(counts, 1.0)[:, None]
    return centroids + step * (batch_means - centroids), seen, jnp.sum(d2)


@partial(jax.jit, static_argnames=("k", "local_trials"))
def _plusplus(x: jax.Array, k: int, key: jax.Array, local_trials: int = 1) -> jax.Array:
    """k-means++ seeding: each new centroid is drawn with probability proportional to its squared distance.

    With ``local_trials > 1`` (greedy k-means++, as scikit-learn seeds), that many candidates are drawn for each
    centroid and the one that lowers the sum of squared distances most is kept.
    """
    x_sq = jnp.sum(x * x, axis=1)

    def sq_distances(c: jax.Array) -> jax.Array:
        # Expanded form: one matrix product instead of an (N, D) temporary per centroid; c is (D,) or (T, D).
        cross = jnp.matmul(x, c.T, precision=_HIGHEST)
        c_sq = jnp.sum(c * c, axis=-1)
        return jnp.maximum((x_sq if c.ndim == 1 else x_sq[:, None]) - 2.0 * cross + c_sq, 0.0)

    key, first_key = jax.random.split(key)
    first = x[jax.random.randint(first_key, (), 0, x.shape[0])]
    centroids = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(first)

    def body(i: int, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        centroids, min_d2, key = carry
        key, draw_key = jax.random.split(key)
        total = jnp.sum(min_d2)
        # With fewer distinct points than k every distance can be zero: fall back to a uniform draw.
        proba = jnp.where(total > 0, min_d2 / jnp.where(total > 0, total, 1.0), 1.0 / x.shape[0])
        if local_trials == 1:
            new = x[jax.random.choice(draw_key, x.shape[0], p=proba)]
            return centroids.at[i].set(new), jnp.minimum(min_d2, sq_distances(new)), key
        candidates = jax.random.choice(draw_key, x.shape[0], shape=(local_trials,), p=proba)
        updated = jnp.minimum(min_d2[:, None], sq_distances(x[candidates]))
        best = jnp.argmin(jnp.sum(updated, axis=0))
        return centroids.at[i].set(x[candidates[best]]), updated[:, best], key

    return jax.lax.fori_loop(1, k, body, (centroids, sq_distances(first), key))[0]


def kmeans_plusplus(
    features: np.ndarray, k: int, *, seed: int = 0, sample_size: int | None = None, local_trials: int = 1
) -> np.ndarray:
    """k-means++ initial centroids, drawn from at most ``sample_size`` random points (default: ``64 * k``).

    Seeding costs one pass over the sample per centroid, hence the subsample; Lloyd iterations then use all points.
    ``local_trials`` candidates are tried for each centroid (greedy k-means++; scikit-learn uses
    ``2 + int(log(k))``), the best kept.
    """
    x = _as_features(features)
    if not 1 <= k <= len(x):
        raise InputError(f"k must be between 1 and the number of points ({len(x)}), got {k}")
    if local_trials < 1:
        raise ValueError(f"local_trials must be >= 1, got {local_trials}")
    rng = np.random.default_rng(seed)
    sample_size = min(len(x), sample_size or 64 * k)
    if sample_size < len(x):
        x = x[np.sort(rng.choice(len(x), sample_size, replace=False))]
    return np.asarray(_plusplus(jnp.asarray(x), k, jax.random.key(seed), local_trials))


def fit_kmeans(
    features: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    iters: int = 100,
    batch_size: int | None = None,
    tol: float = 1e-4,
    init: np.ndarray | None = None,
    chunk_size: int = 8192,
) -> KMeansModel:
    """Fit k-means with squared Euclidean distance.

    :param features: (N, D) points.
    :param k: Number of clusters.
    :param seed: Seed of the k-means++ initialisation and of the mini-batch draws.
    :param iters: Maximum number of Lloyd iterations, or number of mini-batch steps if ``batch_size`` is set.
    :param batch_size: If set, run mini-batch k-means on batches of this many points drawn with replacement.
    :param tol: Lloyd stops early once the squared centroid shift is at most ``tol`` times the mean per-dimension
        variance of the data (0 runs every iteration). Unused by mini-batch k-means.
    :param init: Optional (k, D) initial centroids instead of k-means++.
    :param chunk_size: Rows per distance computation; bounds the memory used beside the features.
    :returns: The model; its inertia is the sum of squared distances of all points to their nearest centroid.
    """
    x_np = _as_features(features)
    if iters < 1:
        raise InputError(f"iters must be >= 1, got {iters}")
    if init is None:
        centroids = jnp.asarray(kmeans_plusplus(x_np, k, seed=seed))
    else:
        centroids = jnp.asarray(np.asarray(init, dtype=np.float32))
        if centroids.shape != (k, x_np.shape[1]):
            raise InputError(f"init must have shape {(k, x_np.shape[1])}, got {centroids.shape}")
    x = jnp.asarray(x_np)
    chunk = min(chunk_size, len(x_np))
    history: list[float] = []
    if batch_size is None:
        threshold = tol * float(np.mean(np.var(x_np, axis=0, dtype=np.float64)))
        for _ in range(iters):
            sums, counts, inertia = _statistics(x, centroids, chunk)
            history.append(float(inertia))
            updated = _lloyd_update(centroids, sums, counts)
            shift = float(jnp.sum((updated - centroids) ** 2))
            centroids = updated
            if shift <= threshold:
                break
    else:
        rng = np.random.default_rng(seed)
        seen = jnp.zeros(k, jnp.float32)
        for _ in range(iters):
            batch = x[jnp.asarray(rng.integers(0, len(x_np), min(batch_size, len(x_np))))]
            centroids, seen, batch_inertia = _minibatch_update(centroids, seen, batch)
            history.append(float(batch_inertia))
    final_inertia = float(_statistics(x, centroids, chunk)[2])
    return KMeansModel(centroids=np.asarray(centroids), inertia=final_inertia, inertia_history=tuple(history))
