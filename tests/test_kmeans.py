"""K-means in JAX: cluster recovery, monotone inertia, agreement with a plain numpy Lloyd, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from spidr_jax.evaluate.kmeans import KMeansModel, fit_kmeans, kmeans_plusplus


def blobs(seed, *, k=6, dim=12, n=3000, spread=0.05):
    """Well-separated Gaussian blobs and their true labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 5
    labels = rng.integers(0, k, n)
    return (centers[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def numpy_lloyd(x, init, iters):
    """Textbook Lloyd iterations in float64; empty clusters keep their centroid."""
    centroids = init.astype(np.float64)
    x = x.astype(np.float64)
    for _ in range(iters):
        labels = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(centroids)):
            if np.any(labels == j):
                centroids[j] = x[labels == j].mean(0)
    labels = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    inertia = ((x - centroids[labels]) ** 2).sum()
    return centroids, labels, inertia


def same_partition(a, b):
    """Whether two labelings define the same clusters, up to renaming."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("chunk_size", [8192, 700])
def test_recovers_separated_clusters(chunk_size):
    x, labels = blobs(0)
    model = fit_kmeans(x, 6, seed=1, chunk_size=chunk_size)
    predicted = model.predict(x, chunk_size=chunk_size)
    assert predicted.dtype == np.int32
    assert predicted.shape == (len(x),)
    assert same_partition(predicted, labels)
    assert model.inertia == pytest.approx(len(x) * 12 * 0.05**2, rel=0.1)


def test_inertia_non_increasing():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 8)).astype(np.float32)  # no cluster structure: many iterations to converge
    model = fit_kmeans(x, 20, seed=0, iters=30, tol=0.0)
    history = np.asarray([*model.inertia_history, model.inertia])
    assert len(history) > 5
    assert np.all(np.diff(history) <= 1e-5 * history[:-1])
    assert history[-1] < history[0]


def test_agrees_with_numpy_lloyd():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    init = x[rng.choice(len(x), 7, replace=False)]
    model = fit_kmeans(x, 7, init=init, iters=15, tol=0.0, chunk_size=128)
    centroids, labels, inertia = numpy_lloyd(x, init, 15)
    np.testing.assert_array_equal(model.predict(x), labels)
    np.testing.assert_allclose(model.centroids, centroids, rtol=1e-4, atol=1e-5)
    assert model.inertia == pytest.approx(inertia, rel=1e-5)


def test_empty_cluster_keeps_its_centroid():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]], dtype=np.float32)
    init = np.array([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]], dtype=np.float32)
    model = fit_kmeans(x, 3, init=init, iters=5)
    np.testing.assert_allclose(model.centroids, [[0.05, 0.0], [10.05, 10.0], [100.0, 100.0]], rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x), [0, 0, 1, 1])


def test_kmeans_plusplus_spreads_and_is_seeded():
    x, labels = blobs(4, k=5, spread=0.01)
    centroids = kmeans_plusplus(x, 5, seed=0)
    assert centroids.shape == (5, 12)
    # Seeding by squared distance almost surely hits each far-apart blob once.
    assert len({int(labels[np.argmin(((x - c) ** 2).sum(1))]) for c in centroids}) == 5
    np.testing.assert_array_equal(centroids, kmeans_plusplus(x, 5, seed=0))
    assert not np.array_equal(centroids, kmeans_plusplus(x, 5, seed=1))
    duplicated = np.zeros((10, 3), dtype=np.float32)  # fewer distinct points than k must not produce NaN
    assert np.isfinite(kmeans_plusplus(duplicated, 4)).all()


def test_minibatch():
    x, labels = blobs(5)
    model = fit_kmeans(x, 6, seed=0, iters=60, batch_size=256)
    assert same_partition(model.predict(x), labels)
    full = fit_kmeans(x, 6, seed=0)
    assert model.inertia == pytest.approx(full.inertia, rel=0.05)
    assert len(model.inertia_history) == 60


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_save_load(tmp_path, suffix):
    x, _ = blobs(6, n=500)
    model = fit_kmeans(x, 6, seed=0)
    path = tmp_path / f"kmeans{suffix}"
    model.save(path)
    loaded = KMeansModel.load(path)
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    if suffix == ".npz":
        assert loaded.inertia == model.inertia
        assert loaded.inertia_history == model.inertia_history
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        model.save(tmp_path / "kmeans.pt")


def test_input_checks():
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="k must be between"):
        fit_kmeans(x, 11)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_kmeans(x[0], 2)
    with pytest.raises(ValueError, match="init must have shape"):
        fit_kmeans(x, 2, init=np.zeros((3, 3)))
    model = fit_kmeans(np.arange(30, dtype=np.float32).reshape(10, 3), 2)
    with pytest.raises(ValueError, match="dimension 4"):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 3), np.nan))
    assert model.predict(np.zeros((0, 3))).shape == (0,)
