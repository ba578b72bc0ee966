"""What a Grain worker runs: step number -> this process's rows of that batch, decoded, cropped and masked.

A row whose audio fails to decode (corrupt data behind a valid header, a file changed since the scan) is
replaced by another row of its bucket at least as long as the row's part of the batch, drawn from (seed, epoch,
index in epoch, row slot, attempt): the same replacement on every process and after a resume, cut to the same
length (so the masks, drawn from the manifest's lengths, stay valid).

Everything here is picklable and imports neither jax nor flax: the workers unpickle it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spidr_jax.config.run import MaskingConfig
from spidr_jax.data.audio import AudioError, normalize, read_audio
from spidr_jax.data.batch_plan import EpochPlan, PlannedBatch, SinglePassPlan
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.data.masks import MaskGenerator

Batch = dict[str, np.ndarray]
REPLACEMENT_STREAM = 5  # which row stands in for one that fails to decode (a tag of the data seed's streams)
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
        frames_of: Callable[[np.ndarray], np.ndarray],
        channels: int,
        seed: int,
        streams: tuple[int, int],
        normalize: bool,
        rand_crop: bool,
        pad: bool,
        process_index: int,
        process_count: int,
        resample: bool = False,
    ) -> None:
        self.rows = rows
        self.pad = pad
        self.resample = resample  # rows' lengths are then at 16 kHz (the scan's), their files at any rate
        self.frames_of = frames_of
        self.plan = plan
        self.masks = MaskGenerator(masking_cfg)
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
        num_frames = int(self.frames_of(planned.length))
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
        waveform = read_audio(row, resample=self.resample)
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
