"""The training input pipeline: Grain over step numbers, element ``n`` being this process's part of batch ``n``.

Batches are reproducible from (seed, n) alone. Built once at the start of training (`TrainingData`): the
manifest is read and scanned (bad audio is left out and reported by the returned `ScanResult`), a few static
shapes are chosen (`spidr_jax.data.buckets`) and the batch plan is fixed (`spidr_jax.data.batch_plan`). Each
element is ``(step, batch)`` with ``batch`` a dict of numpy arrays, ready for
``jax.make_array_from_process_local_data``:

- ``"waveforms"``: (B_local, samples) float32, each row normalized over its whole utterance (when
  ``data.normalize``) and then cropped to the bucket length at a random offset (from the start without
  ``data.rand_crop``), drawn from (seed, epoch, index in epoch, row slot); with ``data.enable_padding`` a row
  shorter than its bucket is zero-padded instead;
- ``"lengths"``: (B_local,) int32, only with ``data.enable_padding``: each row's samples before the padding;
- ``"mask"``: (B_local, frames) bool span mask over each row's valid frames, the same number of masked frames in
  every row;
- ``"channel_mask"``: (B_local, encoder_embed_dim) bool, only when ``masking.mask_channel_prob > 0``;
- ``"real"``: (B_local,) bool, validation only: False for the filler rows completing a bucket's last batch;
- ``"bad_audio"``: only when some row failed to decode: a list of ``(location, reason)``, host-side only.

A row whose audio fails to decode is replaced by a deterministic stand-in of its bucket
(`spidr_jax.data.load_batch`, what the workers run).

Masks are drawn for the whole global batch from (seed, step), so they do not depend on the number of processes.
Process ``p`` of ``P`` loads rows ``[p * B / P, (p + 1) * B / P)`` of each global batch of B rows. Decoding and
masking run in Grain worker processes when ``data.num_workers > 0``, else in one background thread.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import grain
import numpy as np
from absl import flags

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import DataConfig, MaskingConfig
from spidr_jax.data.batch_plan import EpochPlan, SinglePassPlan
from spidr_jax.data.buckets import BucketStats, plan_buckets
from spidr_jax.data.load_batch import Batch, FramesOf, LoadBatch, RowTable
from spidr_jax.data.manifest import ManifestError, read_manifest
from spidr_jax.data.scan import NOT_MONO, SAMPLE_RATE_MISMATCH, MinimumLength, ScanResult, scan_manifest
from spidr_jax.data.worker_exit import ExitWithTrainer

# Tags of the random streams drawn from the data seed (the plan uses 0, load_batch's replacements 5).
TRAIN_STREAMS = (1, 2)  # (crop, mask)
VALIDATION_STREAMS = (3, 4)


class BatchIterator(Iterator[tuple[int, Batch]]):
    """Iterator over ``(step, batch)``; close it (or use it as a context manager) to stop the Grain workers."""

    def __init__(self, iterator: grain.DatasetIterator) -> None:
        self._iterator: grain.DatasetIterator | None = iterator

    def __next__(self) -> tuple[int, Batch]:
        if self._iterator is None:
            raise StopIteration
        step, batch = next(self._iterator)
        return step, {name: _own_memory(value) for name, value in batch.items()}

    def close(self) -> None:
        """Stop the workers and free their buffers; idempotent."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
            # Collect Grain's internal iterators now rather than at interpreter exit, when their cleanup fails.
            gc.collect()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class TrainingData:
    """Scanned rows, static shapes and batch plan of a manifest, and the Grain pipeline that loads the batches.

    Args:
        data_cfg: the manifest, length limits, token budget, workers and cropping options.
        masking_cfg: the span masking.
        model_cfg: the model (its extractor sets frames per bucket, ``encoder_embed_dim`` the channel masks).
        seed: the data seed (>= 0); batches are a pure function of (seed, step).
        num_data_shards: the data-parallel size (all devices of all processes on the 'data' axis).
        process_index: this process (default ``jax.process_index()``).
        process_count: the number of processes (default ``jax.process_count()``).
        progress: show a progress bar while scanning.
        single_pass: validation: one pass in manifest order, every row once (see `validation_batches`).

    Attributes:
        scan: the usable rows and the bad ones, for the caller to report (`spidr_jax.data.scan.format_problems`).
        buckets: the shapes and the audio they crop and pad (``buckets.describe()``).
        plan: the global batch plan.
        shapes: ``(global batch, samples)`` of every bucket, for ahead-of-time compilation.
        frames: frames of every bucket length.
        dataset: the Grain ``MapDataset``; ``dataset[n]`` is ``(n, batch n)``.

    """

    def __init__(
        self,
        data_cfg: DataConfig,
        masking_cfg: MaskingConfig,
        model_cfg: DinoSRConfig,
        *,
        seed: int,
        num_data_shards: int,
        process_index: int | None = None,
        process_count: int | None = None,
        progress: bool = True,
        single_pass: bool = False,
    ) -> None:
        if seed < 0:
            raise ValueError(f"the data seed must be >= 0, got {seed}")
        process_index, process_count = _process(process_index, process_count)
        self.process_index, self.process_count = process_index, process_count
        if num_data_shards < 1 or num_data_shards % process_count:
            raise ValueError(f"num_data_shards ({num_data_shards}) must be a positive multiple of {process_count=}")
        conv_layers = model_cfg.extractor_conv_layer_config
        stride = int(np.prod([layer[2] for layer in conv_layers]))
        frames_of = FramesOf(conv_layers)

        # Rows too short for one frame at the shortest bucket length cannot be trained on; drop them as too short.
        shortest = stride
        while frames_of(shortest) < 1:
            shortest += stride
        min_sample_size = max(data_cfg.min_sample_size, shortest)
        self.min_samples = MinimumLength(
            min_sample_size,
            "data.min_sample_size" if data_cfg.min_sample_size >= shortest
            else f"one frame of the model at a multiple of its stride ({stride} samples)",
        )  # fmt: skip
        self.scan: ScanResult = scan_manifest(
            read_manifest(data_cfg.manifest),
            min_sample_size=min_sample_size,
            decode=data_cfg.verify_audio,
            resample=data_cfg.resample,
            progress=progress,
        )
        if not self.scan.rows:
            kinds = [f"{count} {kind}" for kind, count in sorted(self.scan.counts.items())]
            kinds.append(f"{self.scan.num_too_short} shorter than {self.min_samples.describe()}")
            convertible = {SAMPLE_RATE_MISMATCH, NOT_MONO} & set(self.scan.counts)
            hint = "; data.resample=true converts them" if convertible else ""
            raise ManifestError(data_cfg.manifest, f"no usable rows ({', '.join(kinds)}){hint}")
        lengths = np.array([row.num_samples for row in self.scan.rows], dtype=np.int64)
        self.buckets: BucketStats = plan_buckets(
            lengths, data_cfg, num_data_shards=num_data_shards, num_shapes=data_cfg.num_static_shapes, multiple=stride
        )
        global_batches = [bucket.global_batch for bucket in self.buckets.buckets]
        if single_pass:
            self.plan: EpochPlan | SinglePassPlan = SinglePassPlan(
                self.buckets.assignment, self.buckets.lengths, global_batches
            )
        else:
            self.plan = EpochPlan(
                self.buckets.assignment,
                self.buckets.lengths,
                global_batches,
                seed=seed,
                drop_last=data_cfg.drop_last,
            )
        self.shapes = [(bucket.global_batch, bucket.length) for bucket in self.buckets.buckets]
        self.frames = {length: int(frames_of(length)) for length in self.buckets.lengths}
        self.num_workers = data_cfg.num_workers
        self.prefetch = data_cfg.prefetch_factor
        self._load = LoadBatch(
            RowTable(self.scan.rows),
            self.plan,
            masking_cfg,
            frames_of=frames_of,
            channels=model_cfg.encoder_embed_dim,
            seed=seed,
            streams=VALIDATION_STREAMS if single_pass else TRAIN_STREAMS,
            normalize=data_cfg.normalize,
            rand_crop=data_cfg.rand_crop,
            pad=data_cfg.enable_padding,
            resample=data_cfg.resample,
            process_index=process_index,
            process_count=process_count,
        )
        size = self.plan.num_batches if self.plan.num_batches is not None else sys.maxsize
        self.dataset: grain.MapDataset = grain.MapDataset.range(0, size).map(self._load)

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per epoch (per pass for validation)."""
        return self.plan.batches_per_epoch

    @property
    def num_batches(self) -> int | None:
        """Batches in the pass for validation; None in training (epochs repeat forever)."""
        return self.plan.num_batches

    def batch(self, step: int) -> Batch:
        """The part of global batch ``step`` that this process loads, loaded here (as the iterator would)."""
        return self._load(step)[1]

    def row_locations(self, step: int) -> list[str]:
        """Where the rows of global batch ``step`` that this process loads come from.

        As planned: a row that fails to decode is replaced by another, and listed among the run's failures.
        """
        planned = self.plan.batch(step)
        local = len(planned.rows) // self.process_count
        first = self.process_index * local
        return [self.scan.rows[int(index)].location for index in planned.rows[first : first + local]]

    def iterator(self, start_step: int = 0, stop_step: int | None = None) -> BatchIterator:
        """``(step, batch)`` for steps ``start_step, start_step + 1, ...`` up to ``stop_step`` (excluded).

        Without ``stop_step``, training runs forever and validation to the end of its pass. Starting at step k
        gives exactly the batches k, k+1, ... of a run started at 0, which is how training resumes.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        dataset = self.dataset[start_step:stop_step]
        if self.num_workers == 0:
            # One background thread decodes ahead of the training loop.
            options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=self.prefetch)
            return BatchIterator(iter(dataset.to_iter_dataset(options)))
        if not flags.FLAGS.is_parsed():
            # Grain's workers read absl flags; programs that do not parse them run with the defaults.
            flags.FLAGS.mark_as_parsed()
        # Each worker builds whole batches, ``data.prefetch_factor`` ahead (as the reference's DataLoader).
        options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        workers = grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=self.prefetch)
        prefetched = dataset.to_iter_dataset(options).mp_prefetch(workers, worker_init_fn=ExitWithTrainer())
        return BatchIterator(iter(prefetched))


def _own_memory(value: object) -> object:
    """A batch array of the workers' shared memory copied to this process's memory (other values as they are).

    The workers hand batches over in shared memory segments, unlinked when the array is collected. On CPUs, JAX
    arrays made from a batch may keep it alive until the process exits, and the segment is then left behind
    (Python's resource tracker warns of "leaked shared_memory objects"). A copy of one batch costs little.
    """
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        return np.array(value)
    return value


def validation_batches(
    data_cfg: DataConfig, masking_cfg: MaskingConfig, model_cfg: DinoSRConfig, **options: object
) -> TrainingData:
    """One deterministic pass over a validation manifest: every row exactly once, in static shapes.

    Rows are bucketed and cropped as in training (shapes chosen from this manifest's lengths; crops and masks
    drawn from (seed, batch index), identical on every pass). A bucket's last partial batch is filled up with
    repeats of its rows, flagged by ``batch["real"] == False``: weight metrics by ``real`` so that they cover
    the real rows only. ``data.drop_last`` is ignored. `options` are `TrainingData`'s keyword arguments.
    """
    return TrainingData(data_cfg, masking_cfg, model_cfg, single_pass=True, **options)


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    """The index of this process and the process count, from JAX where not given; checked."""
    if index is None or count is None:
        import jax  # noqa: PLC0415 - only needed for the defaults, after jax.distributed.initialize()

        index = jax.process_index() if index is None else index
        count = jax.process_count() if count is None else count
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_index ({index}) must lie in [0, process_count={count})")
    return index, count
