"""K-means over the features of a whole corpus, streamed batch by batch: never more than a batch in memory.

The features come from a *source*: ``source(epoch, start)`` yields float32 ``(frames, dim)`` arrays, the batches of
one pass over this process's part of the corpus from batch ``start`` on, always the same for the same epoch. The fit:

1. **Initial sample**: one pass over ``init_source`` (default: the first epoch's batches) keeps a uniform random
   sample of ``init_sample`` frames (default ``64 * k``; each frame gets a random key, the smallest keys are kept),
   split evenly between the processes. Greedy k-means++ (``2 + ln k`` candidates per centroid, as scikit-learn)
   seeds the centroids from it, then Lloyd iterations run on the sample, in memory, to convergence.
2. **Mini-batch epochs** (the first ``minibatch_epochs``): after every batch, each centroid moves to the running
   mean of all the points it has been assigned so far (scikit-learn's MiniBatchKMeans learning rate,
   ``count_batch / count_total`` per centroid).
3. **Lloyd epochs** (the others): the batches' per-cluster sums and counts are accumulated over the whole pass (in
   float64), and the centroids become the means at the end of the pass: an exact Lloyd step, which never raises the
   inertia and makes the result independent of the batch order.

Why this schedule: a pass over a corpus costs a forward pass of the model over all of its audio, so passes are
dear, while iterations on an in-memory sample are cheap. Lloyd steps over the corpus converge slowly from a plain
k-means++ start (scikit-learn's ``KMeans`` took 50-60 iterations on the test features), and mini-batch updates
alone creep once their per-centroid rates have decayed; converging on the sample first, then one mini-batch pass
and two Lloyd passes over the corpus, came within about 1% of scikit-learn's inertia (``bench/kmeans_quality.py``
compares the schedules). Default: 3 epochs, the first mini-batch.

Processes: every step of every pass runs in lockstep. Each process assigns its own batch, the per-cluster sums,
counts and inertia are summed across processes by ``group.reduce`` and every process applies the same update, so
the result depends on the number of processes (which frames make up a step) and the seed, not on timing. A process
whose stream is exhausted contributes zeros until every stream is. An empty cluster keeps its centroid.

Resuming: with ``state_dir``, the state (centroids, counts, sums, epoch, position in the pass, the sample being
drawn, the inertia so far) is saved every ``save_every`` steps and at the end of every pass
(`spidr_jax.evaluate.kmeans_state`); a fit started again with the same settings continues from there and ends
with the same centroids as an uninterrupted one. Randomness is drawn from ``(seed, process, step)``, so there is
no generator state to keep.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.evaluate.kmeans import _nearest, fit_kmeans, kmeans_plusplus
from spidr_jax.evaluate.kmeans_state import DONE, FIT, INIT, FitState, Reduce, restore_state, save_state
from spidr_jax.progress import make_progress

__all__ = ["FeatureSource", "ProcessGroup", "StreamingKMeans", "fit_streaming_kmeans", "jax_process_group"]

FeatureSource = Callable[[int, int], Iterable[np.ndarray]]
SAMPLE_STREAM = 17  # tag of the random keys of the initial sample


def _identity(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return tree


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """The place of this process among those fitting together, and how to sum arrays over all of them.

    ``reduce`` takes a dict of arrays and returns the dict of their sums over the processes, the same on every one;
    every process must call it the same number of times. One process: the identity.
    """

    index: int = 0
    count: int = 1
    reduce: Reduce = _identity


def jax_process_group() -> ProcessGroup:
    """The group of all JAX processes (after ``jax.distributed.initialize()``), summing with an all-gather."""
    from jax.experimental import multihost_utils  # noqa: PLC0415 - only multi-process fits need it

    def reduce(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if jax.process_count() == 1:
            return tree
        gathered = multihost_utils.process_allgather(tree, tiled=False)
        # Summed here in float64 and in process order: the same bits on every process.
        return {name: np.sum(np.asarray(value, dtype=np.float64), axis=0) for name, value in gathered.items()}

    return ProcessGroup(index=jax.process_index(), count=jax.process_count(), reduce=reduce)


@dataclasses.dataclass(frozen=True)
class StreamingKMeans:
    """A fitted model: ``centroids`` (k, dim) float32, the ``inertia`` of each epoch, ``frames`` per epoch.

    The inertia of a mini-batch epoch sums each frame's squared distance to the nearest centroid when its batch
    was taken; that of a Lloyd epoch is exactly the inertia of the centroids the epoch started from.
    """

    centroids: np.ndarray
    inertia: tuple[float, ...]
    frames: int
    init_sample: int

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])


def _padded_rows(rows: int, chunk: int) -> int:
    """Rows a batch is padded to: ``chunk`` times a power of two (few shapes to compile)."""
    return chunk * 2 ** math.ceil(math.log2(max(1, -(-rows // chunk))))


@partial(jax.jit, static_argnames=("chunk",))
def _batch_statistics(
    x: jax.Array, num_valid: jax.Array, centroids: jax.Array, chunk: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-cluster sums and counts of the first ``num_valid`` rows of ``x``, and their inertia; chunk by chunk."""
    k, dim = centroids.shape

    def body(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        sums, counts, inertia = carry
        rows = jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
        labels, d2 = _nearest(rows, centroids)
        weight = (i * chunk + jnp.arange(chunk) < num_valid).astype(jnp.float32)
        sums = sums + jax.ops.segment_sum(rows * weight[:, None], labels, num_segments=k)
        counts = counts + jax.ops.segment_sum(weight, labels, num_segments=k)
        return sums, counts, inertia + jnp.sum(d2 * weight)

    init = (jnp.zeros((k, dim), jnp.float32), jnp.zeros(k, jnp.float32), jnp.zeros((), jnp.float32))
    return jax.lax.fori_loop(0, x.shape[0] // chunk, body, init)


def _statistics(batch: np.ndarray | None, centroids: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """What this process adds to one step: sums, counts, inertia and frames of its batch (zeros without one)."""
    k, dim = centroids.shape
    if batch is None or len(batch) == 0:
        return {"sums": np.zeros((k, dim), np.float32), "counts": np.zeros(k, np.float32),
                "inertia": np.zeros((), np.float64), "frames": np.zeros((), np.float64),
                "active": np.zeros((), np.float64)}  # fmt: skip
    padded = np.zeros((_padded_rows(len(batch), chunk), dim), np.float32)
    padded[: len(batch)] = batch
    sums, counts, inertia = _batch_statistics(jnp.asarray(padded), len(batch), jnp.asarray(centroids), chunk)
    return {"sums": np.asarray(sums), "counts": np.asarray(counts), "inertia": np.asarray(inertia, np.float64),
            "frames": np.asarray(len(batch), np.float64), "active": np.ones((), np.float64)}  # fmt: skip


def _checked(batch: np.ndarray, dim: object) -> np.ndarray:
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):  # dim: None until the initial sample is drawn
        raise ValueError(f"feature batches must be (frames, {dim or 'dim'}) arrays, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("a feature batch contains NaN or infinite values")
    return x


@dataclasses.dataclass
class _Fit:
    """The fit's passes; `draw_sample` and `run_epoch` advance a `FitState`, saving it as they go."""

    source: FeatureSource
    init_source: Callable[[int], Iterable[np.ndarray]]
    settings: dict
    group: ProcessGroup
    state_dir: Path | None
    save_every: int
    chunk: int
    progress: bool
    total_batches: int | None

    def save(self, state: FitState) -> None:
        if self.state_dir is not None:
            save_state(self.state_dir, state, index=self.group.index, count=self.group.count)

    def passes(self, state: FitState, batches: Iterable[np.ndarray], description: str) -> Iterable[np.ndarray | None]:
        """The batches of this process from ``state.step`` on, then None until every process is exhausted (lockstep)."""
        iterator = iter(batches)
        with make_progress(disable=not self.progress) as bar:
            task = bar.add_task(description, total=self.total_batches, completed=state.step, status="")
            while True:
                batch = next(iterator, None)
                yield None if batch is None else _checked(batch, self.settings.get("dim"))
                bar.advance(task)

    def draw_sample(self, state: FitState) -> None:
        """One pass keeping this process's share of the initial sample, then k-means++ on all shares."""
        share = -(-int(self.settings["init_sample"]) // self.group.count)
        for batch in self.passes(state, self.init_source(state.step), "k-means: initial sample"):
            if self.group.reduce({"active": np.float64(batch is not None)})["active"] == 0:
                break
            if batch is not None:
                self.keep_sample(state, batch, share)
            state.step += 1
            state.tick += 1
            if state.tick % self.save_every == 0:
                self.save(state)
        sample = self.gather_sample(state, share)
        k = int(self.settings["k"])
        if len(sample) < k:
            raise ValueError(f"the corpus has {len(sample)} frames, fewer than k = {k}")
        seeds = kmeans_plusplus(sample, k, seed=int(self.settings["seed"]), sample_size=len(sample),
                                local_trials=2 + int(np.log(k)))  # fmt: skip
        # Lloyd to convergence on the sample, in memory: cheap, and passes over the corpus then only polish.
        iters = int(self.settings["sample_iters"])
        state.centroids = fit_kmeans(sample, k, init=seeds, iters=iters, tol=1e-6).centroids if iters else seeds
        state.seen = np.zeros(k, np.float64)
        state.phase, state.step, state.sample, state.sample_keys = FIT, 0, None, None
        self.settings = state.settings = self.settings | {"dim": sample.shape[1], "init_sample_drawn": len(sample)}
        self.start_epoch(state)
        state.tick += 1  # every save has its own tick, so that processes agree on what a tick holds
        self.save(state)

    def keep_sample(self, state: FitState, batch: np.ndarray, share: int) -> None:
        """Add a batch to this process's sample: the ``share`` frames with the smallest random keys so far."""
        if state.sample is not None and batch.shape[1] != state.sample.shape[1]:
            raise ValueError(f"feature batches of dimensions {state.sample.shape[1]} and {batch.shape[1]}")
        rng = np.random.default_rng([int(self.settings["seed"]), SAMPLE_STREAM, self.group.index, state.step])
        keys, frames = rng.random(len(batch)), batch
        if state.sample is not None and len(state.sample) == share:
            # Only frames with a key below the largest kept one can enter: no copy of the sample for the others.
            entering = keys < state.sample_keys.max()
            if not entering.any():
                return
            keys, frames = keys[entering], batch[entering]
        if state.sample is not None:
            keys, frames = np.concatenate([state.sample_keys, keys]), np.concatenate([state.sample, frames])
        keep = np.sort(np.argsort(keys, kind="stable")[:share])
        state.sample_keys, state.sample = keys[keep], frames[keep]

    def gather_sample(self, state: FitState, share: int) -> np.ndarray:
        """Every process's sample, in process order (slots summed across processes)."""
        dims = np.zeros(self.group.count)
        dims[self.group.index] = 0 if state.sample is None else state.sample.shape[1]
        dim = int(np.max(self.group.reduce({"dims": dims})["dims"]))
        slots = np.zeros((self.group.count, share, dim), np.float32)
        valid = np.zeros(self.group.count, np.float64)
        if state.sample is not None:
            slots[self.group.index, : len(state.sample)] = state.sample
            valid[self.group.index] = len(state.sample)
        gathered = self.group.reduce({"slots": slots, "valid": valid})
        parts = [np.asarray(gathered["slots"][p, : int(n)], np.float32) for p, n in enumerate(gathered["valid"])]
        return np.concatenate(parts)

    def start_epoch(self, state: FitState) -> None:
        k, dim = state.centroids.shape
        state.epoch_sums, state.epoch_counts = np.zeros((k, dim)), np.zeros(k)
        state.epoch_inertia, state.epoch_frames = 0.0, 0

    def run_epoch(self, state: FitState) -> None:
        """The rest of the current epoch's pass, from ``state.step``."""
        minibatch = state.epoch < int(self.settings["minibatch_epochs"])
        kind = "mini-batch" if minibatch else "Lloyd"
        description = f"k-means: epoch {state.epoch + 1}/{self.settings['epochs']} ({kind})"
        for batch in self.passes(state, self.source(state.epoch, state.step), description):
            total = self.group.reduce(_statistics(batch, state.centroids, self.chunk))
            if total["active"] == 0:
                break
            sums, counts = np.asarray(total["sums"], np.float64), np.asarray(total["counts"], np.float64)
            state.epoch_inertia += float(total["inertia"])
            state.epoch_frames += int(total["frames"])
            if minibatch:
                state.seen += counts
                hit = counts > 0
                moved = state.centroids.astype(np.float64)
                moved[hit] += (sums[hit] - counts[hit, None] * moved[hit]) / state.seen[hit, None]
                state.centroids = moved.astype(np.float32)
            else:
                state.epoch_sums += sums
                state.epoch_counts += counts
            state.step += 1
            state.tick += 1
            if state.tick % self.save_every == 0:
                self.save(state)
        if not minibatch:
            hit = state.epoch_counts > 0
            means = state.epoch_sums[hit] / state.epoch_counts[hit, None]
            state.centroids = state.centroids.copy()
            state.centroids[hit] = means.astype(np.float32)
        state.inertia.append(state.epoch_inertia)
        state.frames = state.epoch_frames
        state.epoch += 1
        state.step = 0
        state.phase = DONE if state.epoch == int(self.settings["epochs"]) else FIT
        self.start_epoch(state)
        state.tick += 1
        self.save(state)


def fit_streaming_kmeans(
    source: FeatureSource,
    k: int,
    *,
    seed: int = 0,
    epochs: int = 3,
    minibatch_epochs: int = 1,
    init_sample: int | None = None,
    sample_iters: int = 100,
    init_source: Callable[[int], Iterable[np.ndarray]] | None = None,
    init: np.ndarray | None = None,
    group: ProcessGroup | None = None,
    state_dir: str | Path | None = None,
    save_every: int = 100,
    chunk_size: int = 4096,
    progress: bool = False,
    total_batches: int | None = None,
) -> StreamingKMeans:
    """Fit k-means on the batches of ``source`` (see the module's description), with squared Euclidean distance.

    :param source: ``source(epoch, start)`` yields this process's float32 ``(frames, dim)`` batches of one pass from
        batch ``start`` on (skipping what a resumed fit has already seen), the same batches for the same epoch.
    :param k: number of clusters.
    :param seed: seeds the initial sample and k-means++.
    :param epochs: passes over the corpus.
    :param minibatch_epochs: how many of them (the first) update after every batch; the others are Lloyd steps.
    :param init_sample: frames of the initial sample over all processes (default ``64 * k``).
    :param sample_iters: most Lloyd iterations on the initial sample after k-means++ (0: k-means++ alone).
    :param init_source: ``init_source(start)`` yields the batches the sample is drawn from, from batch ``start`` on;
        default: the first epoch's. A caller can pass a cheaper stream (a random subset of the corpus).
    :param init: initial (k, dim) centroids instead of the sample and k-means++.
    :param group: the processes fitting together (default: this one alone).
    :param state_dir: folder of the saved state; a fit with the same settings continues from it.
    :param save_every: steps between saves (each pass's end is saved too).
    :param chunk_size: frames per distance computation: bounds the memory beside the batch.
    :param progress: show a progress bar; ``total_batches`` (per pass) gives it a length.
    """
    group = group or ProcessGroup()
    if epochs < 1 or not 0 <= minibatch_epochs <= epochs:
        raise ValueError(f"need epochs >= 1 and 0 <= minibatch_epochs <= epochs, got {epochs} and {minibatch_epochs}")
    if min(k, save_every, chunk_size) < 1 or sample_iters < 0:
        raise ValueError(f"k ({k}), save_every and chunk_size must be positive, sample_iters >= 0")
    settings: dict = {
        "k": k,
        "seed": seed,
        "epochs": epochs,
        "minibatch_epochs": minibatch_epochs,
        "init_sample": init_sample or 64 * k,
        "sample_iters": sample_iters,
        "processes": group.count,
        "given_init": init is not None,
    }
    fit = _Fit(
        source=source,
        init_source=init_source or (lambda start: source(0, start)),
        settings=settings,
        group=group,
        state_dir=Path(state_dir) if state_dir is not None else None,
        save_every=save_every,
        chunk=chunk_size,
        progress=progress,
        total_batches=total_batches,
    )
    state = None
    if state_dir is not None:
        state = restore_state(state_dir, settings, group.reduce, index=group.index, count=group.count)
    if state is None:
        state = FitState(settings=dict(settings))
    fit.settings = dict(state.settings)
    if state.phase == INIT and init is not None:
        state.centroids = np.asarray(init, dtype=np.float32).copy()
        if state.centroids.ndim != 2 or state.centroids.shape[0] != k:
            raise ValueError(f"init must be a ({k}, dim) array, got shape {state.centroids.shape}")
        state.seen, state.phase = np.zeros(k, np.float64), FIT
        fit.settings = state.settings = settings | {"dim": int(state.centroids.shape[1]), "init_sample_drawn": 0}
        fit.start_epoch(state)
    elif state.phase == INIT:
        fit.draw_sample(state)
    while state.phase != DONE:
        fit.run_epoch(state)
    drawn = int(state.settings.get("init_sample_drawn", 0))
    return StreamingKMeans(
        centroids=state.centroids, inertia=tuple(state.inertia), frames=state.frames, init_sample=drawn
    )
