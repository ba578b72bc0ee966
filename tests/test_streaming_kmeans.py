"""Streaming k-means: quality against scikit-learn, determinism, exact resume, processes, km.npz, corpus subsets."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.data.subset import sample_hours
from spidr_jax.evaluate.kmeans_state import KMeansStateError
from spidr_jax.evaluate.streaming_kmeans import ProcessGroup, fit_streaming_kmeans, jax_process_group
from spidr_jax.storage.kmeans_file import KMeansFile, KMeansFileError, read_kmeans_file, write_kmeans_file


def utterances(seed=0, *, count=80, frames=250, dim=16, clusters=60, speakers=8):
    """Speech-like features: runs of frames around cluster centres, shifted per speaker (so batches correlate)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    offsets = 0.5 * rng.normal(size=(speakers, dim))
    scales = rng.uniform(0.3, 1.0, size=(clusters, dim))
    result = []
    for _ in range(count):
        labels = np.repeat(rng.integers(0, clusters, frames // 10), 10)
        speaker = offsets[rng.integers(speakers)]
        result.append((centres[labels] + speaker + scales[labels] * rng.normal(size=(frames, dim))).astype(np.float32))
    return result


def batches_of(utts, per_batch=4):
    """A source: each epoch visits the utterances in an order drawn from the epoch, ``per_batch`` per batch."""

    def source(epoch, start):
        order = np.random.default_rng([7, epoch]).permutation(len(utts))
        groups = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
        for group in groups[start:]:
            yield np.concatenate([utts[i] for i in group])

    return source


def inertia(x, centroids):
    d2 = (x * x).sum(1)[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None]
    return float(np.maximum(d2.min(1), 0).sum())


@pytest.fixture(scope="module")
def corpus():
    return utterances()


def test_within_two_percent_of_scikit_learn(corpus):
    from sklearn.cluster import KMeans

    x = np.concatenate(corpus)
    reference = KMeans(n_clusters=32, random_state=0).fit(x).inertia_
    model = fit_streaming_kmeans(batches_of(corpus), 32, seed=0)
    assert model.centroids.shape == (32, 16)
    assert model.frames == len(x)
    assert len(model.inertia) == 3
    ours = inertia(x, model.centroids)
    assert ours <= 1.02 * reference, ours / reference
    # Lloyd epochs never raise the inertia: the last epoch measured its start, the final centroids do no worse.
    assert ours <= model.inertia[-1] * (1 + 1e-5)
    assert model.inertia[2] <= model.inertia[1] * (1 + 1e-5)


def test_seeded_and_deterministic(corpus):
    source = batches_of(corpus[:30])
    first = fit_streaming_kmeans(source, 8, seed=3, epochs=2)
    again = fit_streaming_kmeans(source, 8, seed=3, epochs=2)
    other = fit_streaming_kmeans(source, 8, seed=4, epochs=2)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert first.inertia == again.inertia
    group = jax_process_group()  # one JAX process here: the identity
    assert (group.index, group.count) == (0, 1)
    with_group = fit_streaming_kmeans(source, 8, seed=3, epochs=2, group=group)
    np.testing.assert_array_equal(with_group.centroids, first.centroids)
    assert not np.array_equal(first.centroids, other.centroids)


class Killed(Exception):  # noqa: N818 - the name says what happened
    pass


def killed_after(source, batches):
    """The same source, dying after ``batches`` batches in all (as a killed process would)."""
    taken = [0]

    def dying(epoch, start):
        for batch in source(epoch, start):
            if taken[0] == batches:
                raise Killed
            taken[0] += 1
            yield batch

    return dying


@pytest.mark.parametrize("kill_at", [6, 27, 41])  # in the initial sample, the mini-batch epoch, a Lloyd epoch
def test_a_killed_fit_resumes_exactly(corpus, tmp_path, kill_at):
    source = batches_of(corpus[:40])  # 10 batches per pass
    options = {"seed": 1, "epochs": 4, "minibatch_epochs": 2, "save_every": 4}
    straight = fit_streaming_kmeans(source, 8, **options)
    state = tmp_path / "state"
    with pytest.raises(Killed):
        fit_streaming_kmeans(killed_after(source, kill_at), 8, state_dir=state, **options)
    assert (state / "process-0-of-1.npz").is_file()
    resumed = fit_streaming_kmeans(source, 8, state_dir=state, **options)
    np.testing.assert_array_equal(resumed.centroids, straight.centroids)
    assert resumed.inertia == straight.inertia
    with pytest.raises(KMeansStateError, match=r"state: saved by a fit with other settings \(.*k=8, now 9\)"):
        fit_streaming_kmeans(source, 9, state_dir=state, **options)


class ThreadReduce:
    """Sums across threads standing for processes: every thread deposits its arrays, then all read the sum."""

    def __init__(self, count):
        self.barrier = threading.Barrier(count)
        self.slots = [None] * count

    def for_process(self, index):
        def reduce(tree):
            self.slots[index] = tree
            self.barrier.wait()
            total = {name: sum(np.asarray(slot[name], np.float64) for slot in self.slots) for name in tree}
            self.barrier.wait()
            return total

        return ProcessGroup(index=index, count=len(self.slots), reduce=reduce)


def run_processes(count, function):
    reduce = ThreadReduce(count)
    results, errors = [None] * count, []

    def work(index):
        try:
            results[index] = function(reduce.for_process(index))
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
            reduce.barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_two_processes_equal_the_combined_statistics(corpus):
    utts = corpus[:36]
    split = [utts[:20], utts[20:]]  # uneven: one process runs out of batches first and contributes zeros
    sources = [batches_of(part, per_batch=2) for part in split]

    def combined(epoch, start):  # what the two processes' steps add up to
        streams = [list(source(epoch, 0)) for source in sources]
        for step in range(max(map(len, streams)))[start:]:
            yield np.concatenate([stream[step] for stream in streams if step < len(stream)])

    init = np.concatenate(utts)[::97][:8]
    options = {"seed": 0, "epochs": 3, "minibatch_epochs": 2, "init": init}
    two = run_processes(2, lambda group: fit_streaming_kmeans(sources[group.index], 8, group=group, **options))
    one = fit_streaming_kmeans(combined, 8, **options)
    np.testing.assert_array_equal(two[0].centroids, two[1].centroids)
    np.testing.assert_allclose(two[0].centroids, one.centroids, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two[0].inertia, one.inertia, rtol=1e-5)
    assert two[0].frames == one.frames == sum(map(len, utts))


def test_two_processes_draw_one_sample_and_resume(corpus, tmp_path):
    utts = corpus[:24]
    sources = [batches_of(utts[:12], per_batch=3), batches_of(utts[12:], per_batch=3)]
    options = {"seed": 5, "epochs": 2, "init_sample": 600, "save_every": 2}
    straight = run_processes(2, lambda g: fit_streaming_kmeans(sources[g.index], 6, group=g, **options))
    np.testing.assert_array_equal(straight[0].centroids, straight[1].centroids)
    assert straight[0].init_sample == 600

    def killed_second(group):
        source = killed_after(sources[1], 5) if group.index == 1 else sources[0]
        return fit_streaming_kmeans(source, 6, group=group, state_dir=tmp_path, **options)

    with pytest.raises(AssertionError, match="Killed"):
        run_processes(2, killed_second)
    # As if the kill had come between the two processes' renames of a save: the second is a save behind.
    (tmp_path / "process-1-of-2.prev.npz").replace(tmp_path / "process-1-of-2.npz")
    resumed = run_processes(2, lambda g: fit_streaming_kmeans(sources[g.index], 6, group=g, state_dir=tmp_path,
                                                               **options))  # fmt: skip
    np.testing.assert_array_equal(resumed[0].centroids, straight[0].centroids)


def test_source_checks():
    def wrong_dim(epoch, start):
        del epoch
        yield from [np.zeros((50, 4), np.float32), np.zeros((50, 5), np.float32)][start:]

    with pytest.raises(ValueError, match="dimensions 4 and 5"):
        fit_streaming_kmeans(wrong_dim, 2)
    with pytest.raises(ValueError, match="fewer than k = 80"):
        fit_streaming_kmeans(lambda _epoch, start: iter([np.ones((50, 3), np.float32)][start:]), 80)
    with pytest.raises(ValueError, match="NaN"):
        fit_streaming_kmeans(lambda _epoch, start: iter([np.full((50, 3), np.nan, np.float32)][start:]), 2)


def test_kmeans_file_round_trip_and_refusals(tmp_path):
    model = KMeansFile(centroids=np.arange(12, dtype=np.float32).reshape(4, 3), layer=6, checkpoint="ckpt/dir",
                       inertia=(3.0, 2.5), frames=1234)  # fmt: skip
    path = tmp_path / "km.npz"
    write_kmeans_file(path, model)
    assert [p.name for p in tmp_path.iterdir()] == ["km.npz"]
    loaded = read_kmeans_file(path, dim=3, layer=6)
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    assert (loaded.k, loaded.dim, loaded.layer, loaded.checkpoint, loaded.inertia, loaded.frames) == (
        4, 3, 6, "ckpt/dir", (3.0, 2.5), 1234)  # fmt: skip
    with pytest.raises(KMeansFileError, match=r"km\.npz: centroids of dimension 3, the features have dimension 768"):
        read_kmeans_file(path, dim=768)
    with pytest.raises(KMeansFileError, match=r"km\.npz: fitted on layer 6, not on layer 4"):
        read_kmeans_file(path, layer=4)
    np.savez(tmp_path / "empty.npz", inertia=np.zeros(2))
    with pytest.raises(KMeansFileError, match=r"empty\.npz: no centroids in this file \(arrays: inertia\)"):
        read_kmeans_file(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(KMeansFileError, match=r"text\.npz: not a k-means \.npz file"):
        read_kmeans_file(tmp_path / "text.npz")
    with pytest.raises(KMeansFileError, match=r"missing\.npz: no such k-means file"):
        read_kmeans_file(tmp_path / "missing.npz")
    np.savez(tmp_path / "flat.npz", centroids=np.zeros(5, np.float32))
    with pytest.raises(KMeansFileError, match=r"flat\.npz: centroids must be a \(K, dim\) float array"):
        read_kmeans_file(tmp_path / "flat.npz")
    for error in (KMeansFileError("x"),):
        assert error.exit_code == 1


def test_sample_hours_is_deterministic_and_about_right():
    rng = np.random.default_rng(0)
    rows = [ManifestRow(fileid=f"u{i}", path=f"u{i}.wav", num_samples=int(rng.integers(16_000, 320_000)))
            for i in range(2_000)]  # fmt: skip
    subset = sample_hours(rows, 1.0, seed=2)
    seconds = sum(row.num_samples for row in subset) / 16_000
    assert 3600 <= seconds < 3600 + 20
    assert subset == sample_hours(rows, 1.0, seed=2)
    assert subset != sample_hours(rows, 1.0, seed=3)
    assert [rows.index(row) for row in subset] == sorted(rows.index(row) for row in subset)  # manifest order
    assert sample_hours(rows, 1e6) == rows
    with pytest.raises(ValueError, match="positive"):
        sample_hours(rows, 0)
