"""From text to corpus utterances: synthesize, resample to 16 kHz, carry the labels over.

`synthesize_corpus` speaks every planned utterance twice: with espeak's mnemonics first (needed only where a
phoneme has no IPA name), then in IPA, which also gives the audio. It labels the phoneme events (`phones`),
resamples the audio to 16 kHz, pads, scales and quantizes it (`to_audio`) and moves the segments along
(`resampled_segments`). For the timing check it also measures how far each onset of sound after a silence lies
from the last phoneme event (`onset_delays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from spidr_jax.demo.corpus_builder.espeak import Espeak, Synthesis
from spidr_jax.demo.corpus_builder.phones import MIN_SILENCE, SIL, Segment, merge_segments, native_segments, phone_of
from spidr_jax.demo.corpus_builder.plan import SAMPLE_RATE, BuildOptions, Planned, Speaker, plan_utterances
from spidr_jax.progress import track


def to_audio(synthesis: Synthesis, *, lead: int, trail: int, peak: float, bits: int) -> np.ndarray:
    """Resample to 16 kHz, pad with silence, scale to `peak` and quantize to `bits` of resolution (int16)."""
    audio = resample_poly(synthesis.samples.astype(np.float64), SAMPLE_RATE, synthesis.sample_rate)
    audio *= peak * 32767 / max(float(np.abs(audio).max()), 1.0)
    # A coarser step keeps only `bits` significant bits; FLAC stores the constant zero low bits for free.
    step = 2 ** (16 - bits)
    audio = np.clip(np.round(audio / step) * step, -32768, 32767).astype(np.int16)
    return np.concatenate([np.zeros(lead, np.int16), audio, np.zeros(trail, np.int16)])


def resampled_segments(segments: Sequence[Segment], native_rate: int, lead: int, num_samples: int) -> list[Segment]:
    """Native-rate segments moved to the 16 kHz audio, after `lead` samples of padding; SIL pads both ends."""
    scale = SAMPLE_RATE / native_rate
    bounds = [min(lead + round(s.start * scale), num_samples) for s in segments]
    bounds.append(min(lead + round(segments[-1].end * scale), num_samples))
    moved = [Segment(s.phone, start, end) for s, start, end in zip(segments, bounds[:-1], bounds[1:], strict=True)]
    return merge_segments([Segment(SIL, 0, lead), *moved, Segment(SIL, bounds[-1], num_samples)])


def silence_onsets(samples: np.ndarray, min_run: int) -> np.ndarray:
    """Sample indices where sound resumes after at least `min_run` zero samples."""
    nonzero = np.flatnonzero(samples)
    gaps = np.diff(nonzero) - 1
    onsets = nonzero[1:][gaps >= min_run]
    if len(nonzero) and nonzero[0] >= min_run:
        onsets = np.concatenate([[nonzero[0]], onsets])
    return onsets


def onset_delays(synthesis: Synthesis) -> np.ndarray:
    """For every onset of sound after >= MIN_SILENCE of digital silence, the delay since the last event (s)."""
    onsets = silence_onsets(synthesis.samples, round(MIN_SILENCE * synthesis.sample_rate))
    events = np.array([sample for sample, _ in synthesis.events] or [0])
    last = np.searchsorted(events, onsets, side="right") - 1
    delays = np.where(last >= 0, onsets - events[np.maximum(last, 0)], onsets)
    return delays / synthesis.sample_rate


@dataclass
class Utterance:
    """One corpus utterance: 16 kHz audio, its labelled segments and where it came from."""

    fileid: str
    split: str
    speaker: Speaker
    rate: int
    text: str
    audio: np.ndarray  # int16, 16 kHz
    segments: list[Segment] = field(default_factory=list)
    onset_delays: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds, see `onset_delays`

    @property
    def num_samples(self) -> int:
        """Length of the audio in samples."""
        return len(self.audio)


def synthesize_corpus(options: BuildOptions, espeak: Espeak) -> list[Utterance]:
    """Synthesize every planned utterance, with its labelled segments.

    Two passes: espeak's mnemonics first (needed only where a phoneme has no IPA name), then the IPA pass, which
    also gives the audio and the event positions.
    """
    plan = plan_utterances(options)

    def speak(item: Planned, *, ipa: bool) -> Synthesis:
        s = item.speaker
        return espeak.synthesize(
            item.text, voice=s.voice, rate=item.rate, pitch=s.pitch, pitch_range=s.pitch_range, ipa=ipa
        )

    mnemonics = [
        [name for _, name in speak(item, ipa=False).events]
        for item in track(plan, total=len(plan), description="phoneme names")
    ]
    rng = np.random.default_rng([options.seed, 1])  # padding and levels: a stream apart from the text's
    utterances = []
    for item, names in track(zip(plan, mnemonics, strict=True), total=len(plan), description="synthesizing"):
        synthesis = speak(item, ipa=True)
        if len(names) != len(synthesis.events):
            raise RuntimeError(f"espeak-ng gave different phoneme sequences in the two passes for {item.text!r}")
        labels = [phone_of(ipa, mnemonic) for (_, ipa), mnemonic in zip(synthesis.events, names, strict=True)]
        lead, trail = (int(x) for x in rng.uniform(*options.pad_range, size=2) * SAMPLE_RATE)
        peak = float(rng.uniform(*options.peak_range))
        audio = to_audio(synthesis, lead=lead, trail=trail, peak=peak, bits=options.bits)
        segments = resampled_segments(native_segments(synthesis, labels), synthesis.sample_rate, lead, len(audio))
        utterances.append(
            Utterance(
                item.fileid, item.split, item.speaker, item.rate, item.text, audio, segments, onset_delays(synthesis)
            )
        )
    return utterances
