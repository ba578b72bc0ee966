"""MFCC baseline features: 13 Kaldi MFCCs with deltas and delta-deltas (39 dims) at the model's 50 Hz frame rate.

These are the features HuBERT's first iteration clusters (fairseq's ``dump_mfcc_feature.py``: Kaldi-compatible
MFCCs as ``torchaudio.compliance.kaldi.mfcc(waveform, use_energy=False)`` computes them, then
``torchaudio.functional.compute_deltas`` twice, stacked). Kaldi's defaults, for 16 kHz audio in [-1, 1]:

- frames of 25 ms (400 samples) every 10 ms (160 samples), only those that fit in the audio (``snip_edges``);
- per frame: the mean removed, pre-emphasis 0.97 (the first sample's predecessor being itself), the "povey"
  window (a symmetric Hann window to the power 0.85), zero-padded to 512 samples, power spectrum;
- 23 triangular mel filters (mel = 1127 ln(1 + f / 700)) between 20 Hz and the Nyquist frequency, evenly spaced on
  the mel scale; log of each energy, floored at float32's epsilon; no dither, no energy coefficient;
- an orthonormal DCT-II keeping 13 coefficients, then cepstral liftering ``1 + 11 sin(pi i / 22)``;
- deltas over 5 frames: ``d_t = sum_{k=1,2} k (c_{t+k} - c_{t-k}) / 10``, the edge frames repeated.

Deltas are taken at 100 Hz, then every other frame is kept, starting with the first. That is how fairseq's HuBERT
reads 100 Hz labels with its 50 Hz model (``target_inds = arange(frames) * 2``), and it aligns exactly with the
model: the convolutional extractor's frame ``j`` sees samples ``[320 j, 320 j + 400)``, the very window of MFCC
frame ``2 j``, so both have ``1 + (samples - 400) // 320`` frames (none below 400 samples) and frame ``j`` of
either starts at ``20 j`` ms, which is how units are paired with 10 ms phone alignments.

NumPy (float64 inside, float32 out): utterances have all different lengths, and a jitted function would compile
once per length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from spidr_jax.data.audio import read_audio
from spidr_jax.data.manifest import ManifestRow

__all__ = ["MFCC_DIM", "compute_deltas", "kaldi_mfcc", "mfcc_batches", "mfcc_features", "num_mfcc_frames"]

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
NUM_MEL_BINS = 23
NUM_CEPS = 13
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2  # frames on each side (a window of 5)
SUBSAMPLING = 2  # 100 Hz -> 50 Hz
MFCC_DIM = 3 * NUM_CEPS
LOG_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi floors every filter energy at float's epsilon
CHUNK_FRAMES = 4096  # frames transformed at once: bounds the memory of long files


def num_mfcc_frames(num_samples: int) -> int:
    """Frames of `mfcc_features` for ``num_samples`` samples: ``1 + (num_samples - 400) // 320``, 0 when shorter.

    The same count as the model's convolutional extractor at 50 Hz.
    """
    if num_samples < FRAME_LENGTH:
        return 0
    return (num_samples - FRAME_LENGTH) // (FRAME_SHIFT * SUBSAMPLING) + 1


def _mel(frequency: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(frequency, dtype=np.float64) / 700.0)


@functools.cache
def _mel_filters() -> np.ndarray:
    """(FFT_SIZE // 2 + 1, NUM_MEL_BINS) triangular filters over the power spectrum; the Nyquist bin gets 0."""
    mel_low, mel_high = _mel(LOW_FREQ), _mel(SAMPLE_RATE / 2)
    step = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    left = mel_low + step * np.arange(NUM_MEL_BINS)
    center, right = left + step, left + 2 * step
    bin_mel = _mel(np.arange(FFT_SIZE // 2) * SAMPLE_RATE / FFT_SIZE)[:, None]
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return np.concatenate([filters, np.zeros((1, NUM_MEL_BINS))], axis=0)


@functools.cache
def _cepstra() -> np.ndarray:
    """(NUM_MEL_BINS, NUM_CEPS): the orthonormal DCT-II's first coefficients, each scaled by its lifter."""
    n = np.arange(NUM_MEL_BINS)[:, None]
    k = np.arange(NUM_CEPS)[None, :]
    dct = np.sqrt(2.0 / NUM_MEL_BINS) * np.cos(np.pi / NUM_MEL_BINS * (n + 0.5) * k)
    dct[:, 0] = np.sqrt(1.0 / NUM_MEL_BINS)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * np.arange(NUM_CEPS) / CEPSTRAL_LIFTER)
    return dct * lifter[None, :]


@functools.cache
def _povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** POVEY_POWER


def _frames_to_mfcc(frames: np.ndarray) -> np.ndarray:
    """(n, 400) raw frames -> (n, 13) MFCCs."""
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - PREEMPHASIS * previous) * _povey_window()
    power = np.abs(np.fft.rfft(frames, n=FFT_SIZE, axis=1)) ** 2
    log_energies = np.log(np.maximum(power @ _mel_filters(), LOG_FLOOR))
    return log_energies @ _cepstra()


def kaldi_mfcc(waveform: np.ndarray) -> np.ndarray:
    """(frames_100hz, 13) float64 MFCCs of 16 kHz mono audio, as Kaldi's defaults compute them (no energy)."""
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got shape {x.shape}")
    if len(x) < FRAME_LENGTH:
        return np.zeros((0, NUM_CEPS))
    count = (len(x) - FRAME_LENGTH) // FRAME_SHIFT + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_SHIFT][:count]
    chunks = [_frames_to_mfcc(windows[i : i + CHUNK_FRAMES]) for i in range(0, count, CHUNK_FRAMES)]
    return np.concatenate(chunks, axis=0)


def compute_deltas(features: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
    """Regression deltas along axis 0: ``sum_{k=1..window} k (c[t+k] - c[t-k]) / (2 sum k^2)``, edges repeated."""
    padded = np.concatenate([features[:1].repeat(window, 0), features, features[-1:].repeat(window, 0)], axis=0)
    length = len(features)
    deltas = sum(k * (padded[window + k : window + k + length] - padded[window - k : window - k + length])
                 for k in range(1, window + 1))  # fmt: skip
    return deltas / (2 * sum(k * k for k in range(1, window + 1)))


def mfcc_features(waveform: np.ndarray) -> np.ndarray:
    """(frames_50hz, 39) float32: 13 MFCCs, their deltas and delta-deltas, every other 100 Hz frame.

    ``waveform`` is 16 kHz mono in [-1, 1] (as `spidr_jax.data.audio.read_audio` returns it, not normalized).
    Row ``j`` covers samples ``[320 j, 320 j + 400)``, like the model's frame ``j``; there are
    `num_mfcc_frames` rows.
    """
    mfcc = kaldi_mfcc(waveform)
    if len(mfcc) == 0:
        return np.zeros((0, MFCC_DIM), dtype=np.float32)
    deltas = compute_deltas(mfcc)
    features = np.concatenate([mfcc, deltas, compute_deltas(deltas)], axis=1)
    return features[::SUBSAMPLING].astype(np.float32)


def mfcc_batches(
    rows: Sequence[ManifestRow], *, files_per_batch: int = 32
) -> Callable[[int, int], Iterator[np.ndarray]]:
    """A feature source for `spidr_jax.evaluate.streaming_kmeans`: the MFCC features of ``rows``.

    ``source(epoch, start)`` yields batch ``start`` onwards, each the features of ``files_per_batch`` consecutive
    rows stacked, in manifest order every epoch. Audio at any rate or channel count is resampled to 16 kHz mono;
    files shorter than one frame add nothing.
    """
    if files_per_batch < 1:
        raise ValueError(f"files_per_batch must be positive, got {files_per_batch}")

    def source(epoch: int, start: int) -> Iterator[np.ndarray]:
        del epoch  # the same order every epoch
        for first in range(start * files_per_batch, len(rows), files_per_batch):
            group = rows[first : first + files_per_batch]
            yield np.concatenate([mfcc_features(read_audio(row, resample=True)) for row in group])

    return source
