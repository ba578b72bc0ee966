"""What the demo corpus holds: its audio format, its speakers, the build options and the utterances to speak.

`plan_utterances` turns `BuildOptions` into the list of utterances in the order they are synthesized: for each,
its sentence (from `sentences`), split, speaker and speaking rate. The same options give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spidr_jax.demo.corpus_builder.sentences import make_sentences
from spidr_jax.errors import InputError

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 160  # one alignment label per 10 ms
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice+variant at a fixed base pitch and pitch range."""

    speaker_id: str
    voice: str  # espeak-ng voice name, "+variant" selects a voice variant (espeak-ng --voices=variant)
    pitch: int  # base pitch, 0-100 (espeak's default is 50)
    pitch_range: int  # 0 (monotone) to 100, default 50
    rate: int  # mean speaking rate in words per minute; each utterance draws around it


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("S01", "en-us+m3", pitch=38, pitch_range=55, rate=165),
    Speaker("S02", "en-us+steph", pitch=60, pitch_range=60, rate=175),
    Speaker("S03", "en-gb-x-rp+m1", pitch=32, pitch_range=45, rate=155),
    Speaker("S04", "en-gb-x-rp+belinda", pitch=66, pitch_range=65, rate=180),
    Speaker("S05", "en-gb-scotland+m6", pitch=46, pitch_range=50, rate=160),
    Speaker("S06", "en-us-nyc+Annie", pitch=54, pitch_range=70, rate=185),
    Speaker("S07", "en-029+m4", pitch=42, pitch_range=40, rate=170),
    Speaker("S08", "en+f1", pitch=58, pitch_range=55, rate=165),
)
RATE_JITTER = 15  # wpm either side of the speaker's rate
RATE_LIMITS = (140, 200)


@dataclass(frozen=True)
class BuildOptions:
    """What to generate."""

    seed: int = 0
    num_utterances: int = 320
    dev_fraction: float = 0.15
    bits: int = 11
    pad_range: tuple[float, float] = (0.08, 0.25)  # seconds of silence before and after each sentence
    peak_range: tuple[float, float] = (0.4, 0.8)  # peak level, as a fraction of full scale


@dataclass(frozen=True)
class Planned:
    """One utterance to synthesize."""

    fileid: str
    split: str
    speaker: Speaker
    rate: int
    text: str


def plan_utterances(options: BuildOptions) -> list[Planned]:
    """Every utterance, dev first.

    Dev and train share no sentence; speakers take turns within each split, so every speaker is in dev and the
    splits are balanced.
    """
    rng = np.random.default_rng(options.seed)
    sentences = make_sentences(options.num_utterances, rng)
    num_speakers = len(SPEAKERS)
    num_dev = max(num_speakers, round(options.num_utterances * options.dev_fraction / num_speakers) * num_speakers)
    if num_dev >= options.num_utterances:
        raise InputError(f"{options.num_utterances} utterances leave none for train after {num_dev} dev ones")
    plan = []
    for index, text in enumerate(sentences):
        split = "dev" if index < num_dev else "train"
        speaker = SPEAKERS[(index if split == "dev" else index - num_dev) % num_speakers]
        rate = int(np.clip(speaker.rate + rng.integers(-RATE_JITTER, RATE_JITTER + 1), *RATE_LIMITS))
        plan.append(Planned(f"{speaker.speaker_id}_{index:04d}", split, speaker, rate, text))
    return plan
