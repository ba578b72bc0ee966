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

A row whose audio fails to decode (corrupt data behind a valid header, a file changed since the scan) is
replaced by another row of its bucket at least as long as the row's part of the batch, drawn from (seed, epoch,
index in epoch, row slot, attempt): the same replacement on every process and after a resume, cut to the same
length (so the masks, drawn from the manifest's lengths, stay valid).

Masks are drawn for the whole global batch from (seed, step), so they do not depend on the number of processes.
Process ``p`` of ``P`` loads rows ``[p * B / P, (p + 1) * B / P)`` of each global batch of B rows. Decoding and
masking run in Grain worker processes when ``data.num_workers > 0``, else in one background thread.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self

import grain
import numpy as np
from absl import flags

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import DataConfig, MaskingConfig
from spidr_jax.data.audio import AudioError, normalize, read_audio
from spidr_jax.data.batch_plan import EpochPlan, PlannedBatch, SinglePassPlan
from spidr_jax.data.buckets import BucketStats, check_data_config, plan_buckets
from spidr_jax.data.manifest import ManifestError, ManifestRow, read_manifest
from spidr_jax.data.masks import MaskGenerator
from spidr_jax.data.scan import ScanResult, scan_manifest

Batch = dict[str, np.ndarray]
# Tags of the random streams drawn from the data seed (the plan uses 0); validation has its own.
TRAIN_STREAMS = (1, 2)  # (crop, mask)
VALIDATION_STREAMS = (3, 4)
REPLACEMENT_STREAM = 5  # which row stands in for one that fails to decode
MAX_REPLACEMENTS = 8  # attempts before a batch slot gives up (then the whole bucket is likely unreadable)
BAD_AUDIO = "bad_audio"  # the batch key listing the rows that failed to decode (never sent to devices)


class RowTable:
    """The scanned rows as columns (one text blob and integer arrays), for the workers.

    A few times smaller than a list of `ManifestRow`, which matters when every worker holds a copy of millions
    of rows. Rows come back with their path as fileid (reading needs only the location).
    """

    def __init__(self, rows: list[ManifestRow]) -> None:
        # surrogatepass round-trips any str, including undecodable file names.
        paths = [row.path.encode("utf-8", "surrogatepass") for row in rows]
        self._text = b"".join(paths)
        self._ends = np.cumsum([len(path) for path in paths], dtype=np.int64)
        self._num_samples = np.array([row.num_samples for row in rows], dtype=np.int64)
        self._archives = sorted({row.archive for row in rows if row.archive is not None})
        index = {archive: i for i, archive in enumerate(self._archives)}
        self._archive = np.array([index.get(row.archive, -1) for row in rows], dtype=np.int32)
        self._offset = np.array([row.byte_offset or 0 for row in rows], dtype=np.int64)
        self._size = np.array([row.byte_size or 0 for row in rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._num_samples)

    @property
    def num_samples(self) -> np.ndarray:
        """Every row's number of samples (from the manifest, checked by the scan)."""
        return self._num_samples

    def __getitem__(self, index: int) -> ManifestRow:
        start = int(self._ends[index - 1]) if index > 0 else 0
        path = self._text[start : int(self._ends[index])].decode("utf-8", "surrogatepass")
        archive = int(self._archive[index])
        if archive < 0:
            return ManifestRow(fileid=path, path=path, num_samples=int(self._num_samples[index]))
        return ManifestRow(
            fileid=path,
            path=path,
            num_samples=int(self._num_samples[index]),
            archive=self._archives[archive],
            byte_offset=int(self._offset[index]),
            byte_size=int(self._size[index]),
        )


class LoadBatch:
    """Grain transform (picklable, runs in the workers): step -> (step, this process's rows of that batch)."""

    def __init__(
        self,
        rows: RowTable,
        plan: EpochPlan | SinglePassPlan,
        masking_cfg: MaskingConfig,
        *,
        frames: dict[int, int],
        frames_of: Callable[[np.ndarray], np.ndarray],
        channels: int,
        seed: int,
        streams: tuple[int, int],
        normalize: bool,
        rand_crop: bool,
        pad: bool,
        process_index: int,
        process_count: int,
    ) -> None:
        self.rows = rows
        self.pad = pad
        self.frames_of = frames_of
        self.plan = plan
        self.masks = MaskGenerator(masking_cfg)
        self.frames = frames
        self.channels = channels if masking_cfg.mask_channel_prob > 0 else None
        self.seed = seed
        self.crop_stream, self.mask_stream = streams
        self.normalize = normalize
        self.rand_crop = rand_crop
        self.process_index = process_index
        self.process_count = process_count
        self._members: dict[int, np.ndarray] = {}

    def __call__(self, step: int) -> tuple[int, Batch]:
        """``(step, batch)``: the rows of global batch ``step`` that this process loads, and their masks."""
        planned = self.plan.batch(step)
        local = len(planned.rows) // self.process_count
        first = self.process_index * local
        # Each row's samples in the batch: its bucket length, or its own length where it is padded.
        lengths = np.minimum(self.rows.num_samples[planned.rows], planned.length)
        waveforms = np.empty((local, planned.length), dtype=np.float32)
        failures: list[tuple[str, str]] = []
        for i in range(local):
            slot = first + i
            waveforms[i, : lengths[slot]] = self._load_slot(planned, slot, int(lengths[slot]), failures)
            waveforms[i, lengths[slot] :] = 0.0  # the padding (none without data.enable_padding)
        # The whole global batch's masks, so that every process draws the same ones; then this process's rows.
        rng = np.random.default_rng([self.seed, self.mask_stream, step])
        num_frames = self.frames[planned.length]
        valid = np.asarray(self.frames_of(lengths), dtype=np.int64)
        time_mask, channel_mask = self.masks(
            rng, len(planned.rows), num_frames, channels=self.channels, valid_frames=valid
        )
        if time_mask is None:
            time_mask = np.zeros((len(planned.rows), num_frames), dtype=bool)
        batch = {"waveforms": waveforms, "mask": time_mask[first : first + local]}
        if self.pad:
            batch["lengths"] = lengths[first : first + local].astype(np.int32)
        if channel_mask is not None:
            batch["channel_mask"] = channel_mask[first : first + local]
        if planned.real is not None:
            batch["real"] = planned.real[first : first + local]
        if failures:
            batch[BAD_AUDIO] = failures
        return step, batch

    def _load_slot(self, planned: PlannedBatch, slot: int, length: int, failures: list[tuple[str, str]]) -> np.ndarray:
        """``length`` samples for batch slot ``slot``: its row, or a deterministic stand-in if that fails to decode."""
        index = int(planned.rows[slot])
        for attempt in range(MAX_REPLACEMENTS + 1):
            row = self.rows[index]
            try:
                return self._crop(row, planned, slot, length)
            except AudioError as error:
                failures.append((row.location, error.reason))
            members = self._bucket_members(planned.bucket, length)
            rng = np.random.default_rng([self.seed, REPLACEMENT_STREAM, planned.epoch, planned.index, slot, attempt])
            index = int(members[rng.integers(len(members))])
        raise AudioError(row.location, f"this row and {MAX_REPLACEMENTS} replacements from its bucket failed")

    def _bucket_members(self, bucket: int, length: int) -> np.ndarray:
        """Indices of the rows of a bucket with at least ``length`` samples (all of them without padding)."""
        if bucket not in self._members:
            self._members[bucket] = np.flatnonzero(self.plan.assignment == bucket)
        members = self._members[bucket]
        return members[self.rows.num_samples[members] >= length] if self.pad else members  # only on a failure

    def _crop(self, row: ManifestRow, planned: PlannedBatch, slot: int, length: int) -> np.ndarray:
        """A row decoded, normalized over the whole utterance, and cropped to ``length`` samples."""
        waveform = read_audio(row)
        if self.normalize:
            waveform = normalize(waveform)
        room = len(waveform) - length
        if room < 0:
            # The scan checked the header against the manifest; the file changed since.
            raise AudioError(row.location, f"{len(waveform)} samples, fewer than the manifest's {row.num_samples}")
        offset = 0
        if self.rand_crop and room > 0:
            rng = np.random.default_rng([self.seed, self.crop_stream, planned.epoch, planned.index, slot])
            offset = int(rng.integers(0, room + 1))
        return waveform[offset : offset + length]


class FramesOf:
    """Picklable samples -> frames of the conv extractor (numpy; the workers do not import jax or flax)."""

    def __init__(self, conv_layers: Sequence[Sequence[int]]) -> None:
        self.layers = [(int(kernel), int(stride)) for _, kernel, stride in conv_layers]

    def __call__(self, samples: np.ndarray | int) -> np.ndarray:
        """Frames of waveforms of `samples` samples (array or int)."""
        frames = np.asarray(samples, dtype=np.int64)
        for kernel, stride in self.layers:
            frames = np.maximum((frames - kernel) // stride + 1, 0)
        return frames


class BatchIterator(Iterator[tuple[int, Batch]]):
    """Iterator over ``(step, batch)``; close it (or use it as a context manager) to stop the Grain workers."""

    def __init__(self, iterator: grain.DatasetIterator) -> None:
        self._iterator: grain.DatasetIterator | None = iterator

    def __next__(self) -> tuple[int, Batch]:
        if self._iterator is None:
            raise StopIteration
        return next(self._iterator)

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
        check_data_config(data_cfg)
        if seed < 0:
            raise ValueError(f"the data seed must be >= 0, got {seed}")
        process_index, process_count = _process(process_index, process_count)
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
        self.scan: ScanResult = scan_manifest(
            read_manifest(data_cfg.manifest),
            min_sample_size=min_sample_size,
            decode=data_cfg.verify_audio,
            progress=progress,
        )
        if not self.scan.rows:
            kinds = [f"{count} {kind}" for kind, count in sorted(self.scan.counts.items())]
            kinds.append(f"{self.scan.num_too_short} shorter than {min_sample_size} samples")
            raise ManifestError(data_cfg.manifest, f"no usable rows ({', '.join(kinds)})")
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
            frames=self.frames,
            frames_of=frames_of,
            channels=model_cfg.encoder_embed_dim,
            seed=seed,
            streams=VALIDATION_STREAMS if single_pass else TRAIN_STREAMS,
            normalize=data_cfg.normalize,
            rand_crop=data_cfg.rand_crop,
            pad=data_cfg.enable_padding,
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


class ExitWithTrainer:
    """Grain worker init (picklable): the worker exits as soon as the trainer is gone, however it died.

    The trainer's pid is taken in the trainer itself, so a worker started around its death knows whom to watch.
    """

    def __init__(self) -> None:
        self.trainer = os.getpid()

    def __call__(self, _worker_index: int, _worker_count: int) -> None:
        """Start the watch (in the worker, as it starts)."""
        threading.Thread(target=self._watch, name="exit-with-trainer", daemon=True).start()

    def _watch(self) -> None:
        while _alive(self.trainer):
            time.sleep(1.0)
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process may not be signalled)
    return True


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
