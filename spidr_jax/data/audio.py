"""Decoding utterances to float32 waveforms, reading their headers, and per-utterance normalization.

Audio is decoded with soundfile (libsndfile: wav, flac, ogg, ...). Integer PCM is scaled to [-1, 1) by
``2 ** (bits - 1)``, so int16 samples become ``value / 32768`` as with torchaudio and torchcodec.

Members of uncompressed tar archives are decoded in place: each archive is memory-mapped once per process
and soundfile reads the member's byte range through a small seekable view, without copying the archive.

The model reads 16 kHz mono. Other audio is refused unless the caller opts in with ``resample=True``: channels
are then averaged to mono and the result resampled to 16 kHz with soxr (high quality); 16 kHz mono audio is
returned untouched either way. `resampled_length` gives the 16 kHz length soxr produces, from the header alone.
"""

from __future__ import annotations

import mmap
import os
import resource
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.errors import UserError

SAMPLE_RATE = 16_000
LAYER_NORM_EPS = 1e-5

# Errors soundfile raises for missing, unreadable or undecodable input.
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, TypeError)


class AudioError(UserError, ValueError):
    """Audio that cannot be used: unreadable, not 16 kHz mono (without resampling), empty, or with NaN/inf samples.

    The message is ``"PATH: reason"``.
    """

    def __init__(self, location: str | Path, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = str(location)
        self.reason = reason


class AudioInfo(NamedTuple):
    """What an audio header says, read without decoding the samples."""

    num_samples: int
    sample_rate: int
    channels: int


class _MemberReader:
    """A read-only, seekable file over ``size`` bytes at ``offset`` of a memory-mapped archive."""

    def __init__(self, data: mmap.mmap, offset: int, size: int) -> None:
        self._view = memoryview(data)[offset : offset + size]
        self._position = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        data = self._view[self._position : end].tobytes() if end > self._position else b""
        self._position += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        data = self._view[self._position : self._position + len(buffer)]
        count = len(data)
        buffer[:count] = data
        self._position += count
        return count


def _cache_size() -> int:
    # Every cached map holds a duplicated file descriptor: stay well within the process's limit.
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft_limit // 4))


class _ArchiveMaps:
    """Per-process LRU cache of read-only memory maps, one per archive path; thread-safe."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, archive: str) -> mmap.mmap:
        with self._lock:
            if archive in self._maps:
                self._maps.move_to_end(archive)
                return self._maps[archive]
        with Path(archive).open("rb") as file:
            mapped = mmap.mmap(file.fileno(), length=0, access=mmap.ACCESS_READ)
        with self._lock:
            # Another thread may have mapped it meanwhile; keep one. Evicted maps close when their last
            # reader lets go of them.
            mapped = self._maps.setdefault(archive, mapped)
            while len(self._maps) > self._maxsize:
                self._maps.popitem(last=False)
        return mapped

    def reset(self) -> None:
        """Forget the maps without closing them (they may be in use by the parent after a fork)."""
        self._maps = OrderedDict()
        self._lock = threading.Lock()


_ARCHIVES = _ArchiveMaps(_cache_size())
# A forked data-loading worker starts with its own cache, and a fresh lock another thread cannot be holding.
os.register_at_fork(after_in_child=_ARCHIVES.reset)


def _member_reader(row: ManifestRow) -> _MemberReader:
    """A file-like view of an archive row's bytes, checked against the archive's size."""
    assert row.archive is not None
    if row.byte_offset is None or row.byte_size is None:
        raise AudioError(row.location, "archive row without byte_offset/byte_size")
    try:
        data = _ARCHIVES.get(row.archive)
    except (OSError, ValueError) as error:
        # mmap refuses empty files with ValueError.
        raise AudioError(row.location, f"cannot open archive: {error}") from error
    if row.byte_offset + row.byte_size > len(data):
        raise AudioError(
            row.location,
            f"bytes {row.byte_offset}..{row.byte_offset + row.byte_size} lie beyond the archive's end ({len(data)})",
        )
    return _MemberReader(data, row.byte_offset, row.byte_size)


def _source(row_or_path: ManifestRow | str | Path) -> tuple[_MemberReader | str, str]:
    """What soundfile should open, and the location to name in errors."""
    if isinstance(row_or_path, ManifestRow):
        if row_or_path.in_archive:
            return _member_reader(row_or_path), row_or_path.location
        return row_or_path.path, row_or_path.path
    return str(row_or_path), str(row_or_path)


def _reason(error: Exception) -> str:
    # libsndfile errors carry the bare reason; their str() repeats the path, which AudioError already names.
    return getattr(error, "error_string", None) or str(error)


def _open(source: _MemberReader | str, location: str) -> sf.SoundFile:
    try:
        return sf.SoundFile(source)
    except _DECODE_ERRORS as error:
        if isinstance(source, str) and not Path(source).is_file():
            # libsndfile reports a missing file as a bare "System error".
            raise AudioError(location, "not a file" if Path(source).exists() else "no such file") from error
        raise AudioError(location, f"unreadable audio: {_reason(error)}") from error


def audio_info(row_or_path: ManifestRow | str | Path) -> AudioInfo:
    """Length, sample rate and channel count from the header alone (fast: no samples are decoded)."""
    source, location = _source(row_or_path)
    with _open(source, location) as file:
        return AudioInfo(num_samples=file.frames, sample_rate=file.samplerate, channels=file.channels)


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Samples of ``num_samples`` at ``sample_rate`` once resampled to 16 kHz, exactly as soxr outputs them.

    soxr's one-shot resampling returns ``num_samples * 16000 / sample_rate`` samples rounded half up; computed
    here in integers, so it is exact for any length.
    """
    if sample_rate <= 0:
        raise ValueError(f"the sample rate must be positive, got {sample_rate}")
    if sample_rate == SAMPLE_RATE:
        return num_samples
    return (2 * num_samples * SAMPLE_RATE + sample_rate) // (2 * sample_rate)


def to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` float32 audio as 16 kHz mono: channels averaged, then soxr "HQ".

    16 kHz mono input is returned as it is (the same array, no copy).
    """
    mono = samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)
    if sample_rate == SAMPLE_RATE:
        return mono
    return soxr.resample(np.ascontiguousarray(mono, dtype=np.float32), sample_rate, SAMPLE_RATE, quality="HQ")


def _decode(source: _MemberReader | str, location: str, *, resample: bool = False) -> np.ndarray:
    with _open(source, location) as file:
        if not resample and file.samplerate != SAMPLE_RATE:
            raise AudioError(location, f"sample rate is {file.samplerate} Hz, expected {SAMPLE_RATE} Hz")
        if not resample and file.channels != 1:
            raise AudioError(location, f"{file.channels} channels, expected mono")
        try:
            waveform = file.read(dtype="float32", always_2d=False)
        except _DECODE_ERRORS as error:
            raise AudioError(location, f"cannot decode: {_reason(error)}") from error
        sample_rate = file.samplerate
    if waveform.size == 0:
        raise AudioError(location, "no samples")
    non_finite = waveform.size - int(np.count_nonzero(np.isfinite(waveform)))
    if non_finite:  # a float file with NaN or inf: a model fed with them computes NaN for the whole batch
        raise AudioError(location, f"non-finite samples ({non_finite} NaN or infinite)")
    if not resample:
        return waveform
    waveform = to_model_rate(waveform, sample_rate)
    if waveform.size == 0:
        raise AudioError(location, f"no samples once resampled from {sample_rate} Hz to {SAMPLE_RATE} Hz")
    return waveform


def read_audio(row: ManifestRow, *, resample: bool = False) -> np.ndarray:
    """The float32 mono waveform, shape ``(samples,)``, of a manifest row (file or archive member).

    With ``resample=True`` audio at any rate and channel count is converted to 16 kHz mono (`to_model_rate`);
    without it, anything but 16 kHz mono raises `AudioError`.
    """
    source, location = _source(row)
    return _decode(source, location, resample=resample)


def read_audio_file(path: str | Path, *, resample: bool = False) -> np.ndarray:
    """The float32 mono waveform, shape ``(samples,)``, of an audio file (``resample`` as in `read_audio`)."""
    return _decode(str(path), str(path), resample=resample)


def normalize(waveform: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance over the whole utterance, as ``F.layer_norm(w, w.shape)`` without affine.

    Statistics are taken in float64 (biased variance, eps 1e-5 inside the square root); the result is float32.
    """
    if waveform.size == 0:
        raise ValueError("cannot normalize an empty waveform")
    values = np.asarray(waveform, dtype=np.float64)
    centered = values - values.mean()
    variance = np.mean(centered * centered)
    return (centered / np.sqrt(variance + LAYER_NORM_EPS)).astype(np.float32)
