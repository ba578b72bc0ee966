"""The timing check, run on every build: the labels must agree with the signal.

`check_timing` returns a `TimingReport`, whose numbers the corpus README states: onsets of sound after a silence
fall on phoneme events, pauses between words are silent, and frames labelled as sibilants carry more energy above
4 kHz than vowel frames, most clearly with the labels where they are rather than shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spidr_jax.demo.corpus_builder.phones import PHONES, SIL, Segment, frame_labels
from spidr_jax.demo.corpus_builder.plan import FRAME_SAMPLES, SAMPLE_RATE
from spidr_jax.demo.corpus_builder.synthesis import Utterance

ONSET_TOLERANCE = 1e-3  # seconds an onset may lag its event (a noise burst can start on zero-valued samples)
_SIBILANTS = ("S", "Z", "SH", "ZH")
_VOWELS = PHONES[1:16]


def frame_features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms frame: RMS level (dB re full scale) and the share of energy above 4 kHz."""
    num_frames = len(audio) // FRAME_SAMPLES
    frames = audio[: num_frames * FRAME_SAMPLES].astype(np.float64).reshape(num_frames, FRAME_SAMPLES) / 32768
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    power = np.abs(np.fft.rfft(frames * np.hanning(FRAME_SAMPLES), axis=1)) ** 2
    high = power[:, np.fft.rfftfreq(FRAME_SAMPLES, 1 / SAMPLE_RATE) > 4000].sum(axis=1)
    return level, high / (power.sum(axis=1) + 1e-20)


@dataclass(frozen=True)
class TimingReport:
    """How well the labels agree with the audio (see `check_timing`)."""

    onsets: int  # places in the synthesizer's output where sound resumes after >= 2 ms of digital silence
    onsets_at_events: int  # of which within ONSET_TOLERANCE after the sample of a phoneme event
    max_onset_delay_ms: float  # the largest delay from an event to such an onset
    pause_frames: int  # SIL frames inside pauses between words (padding and a pause's edge frames excluded)
    pause_silent: float  # share of those below -60 dBFS
    best_lag_ms: int  # label shift that best separates sibilant from vowel frames by high-band energy
    sibilant_high: float  # mean high-band share of sibilant frames at lag 0
    vowel_high: float  # idem, vowel frames


def pause_frame_mask(segments: Sequence[Segment], num_samples: int) -> np.ndarray:
    """Frames well inside a SIL segment that lies between two phones (not the padding at either end)."""
    mask = np.zeros(num_samples // FRAME_SAMPLES, bool)
    for segment in segments[1:-1]:
        if segment.phone == SIL:
            first = -(-segment.start // FRAME_SAMPLES) + 1  # skip the frame that straddles each edge, and one more
            last = segment.end // FRAME_SAMPLES - 1
            mask[first:last] = True
    return mask


def sibilant_vowel_contrast(
    audio_and_segments: Sequence[tuple[np.ndarray, Sequence[Segment]]], max_lag: int = 5
) -> dict[int, tuple[float, float]]:
    """Mean high-band share of frames labelled sibilant and vowel, with the labels shifted by -max_lag..max_lag."""
    features = [(frame_features(audio)[1], np.array(frame_labels(s, len(audio)))) for audio, s in audio_and_segments]
    contrast = {}
    for lag in range(-max_lag, max_lag + 1):
        sibilant, vowel = [], []
        for high, labels in features:
            shifted = np.roll(labels, lag)  # labels[i - lag] now labels frame i
            sibilant.append(high[np.isin(shifted, _SIBILANTS)])
            vowel.append(high[np.isin(shifted, _VOWELS)])
        contrast[lag] = (float(np.concatenate(sibilant).mean()), float(np.concatenate(vowel).mean()))
    return contrast


def check_timing(utterances: Sequence[Utterance]) -> TimingReport:
    """Compare labels with the signal.

    In the synthesizer's output every onset of sound after a silence should fall on a phoneme event (a noise
    source may start on a zero sample, hence ONSET_TOLERANCE). In the written 16 kHz audio, pauses between words
    should be silent, sibilants should carry more energy above 4 kHz than vowels, and this contrast should be
    largest with the labels where they are (lag 0), not shifted.
    """
    delays = np.concatenate([u.onset_delays for u in utterances])
    pauses = np.concatenate(
        [frame_features(u.audio)[0][pause_frame_mask(u.segments, u.num_samples)] for u in utterances]
    )
    contrast = sibilant_vowel_contrast([(u.audio, u.segments) for u in utterances])
    best = max(contrast, key=lambda lag: contrast[lag][0] - contrast[lag][1])
    return TimingReport(
        onsets=len(delays),
        onsets_at_events=int(np.sum(delays <= ONSET_TOLERANCE)),
        max_onset_delay_ms=float(delays.max() * 1000) if len(delays) else 0.0,
        pause_frames=len(pauses),
        pause_silent=float(np.mean(pauses < -60)) if len(pauses) else float("nan"),
        best_lag_ms=best * 10,
        sibilant_high=contrast[0][0],
        vowel_high=contrast[0][1],
    )
