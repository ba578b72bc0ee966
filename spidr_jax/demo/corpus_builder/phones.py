"""The phone inventory and the labels: espeak-ng phonemes to phones, labelled segments, 10 ms frame labels.

`PHONES` is the inventory (ARPAbet, plus DX and SIL) and `phone_of` maps one espeak-ng phoneme onto it.
`native_segments` turns the phoneme events of a synthesis into labelled segments, giving a stop's closure (the
digital silence just before its event) to the stop; `frame_labels` reads one label per 10 ms frame off segments.
"""

# The phone mappings hold IPA symbols that look like ASCII letters (script a and g, small capital I, the length
# mark); they are meant.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spidr_jax.demo.corpus_builder.espeak import Synthesis
from spidr_jax.demo.corpus_builder.plan import FRAME_SAMPLES
from spidr_jax.errors import UserError

SIL = "SIL"

# The inventory: ARPAbet (the CMU/TIMIT-39 labels) plus DX for the flap, plus SIL. Order is the one in phones.txt.
PHONES: tuple[str, ...] = (
    SIL,
    # vowels
    "IY", "IH", "EH", "AE", "AA", "AO", "AH", "UH", "UW", "ER", "EY", "AY", "OY", "AW", "OW",
    # stops and affricates
    "P", "B", "T", "D", "K", "G", "DX", "CH", "JH",
    # fricatives
    "F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH",
    # nasals, liquids, glides
    "M", "N", "NG", "L", "R", "W", "Y",
)  # fmt: skip

PHONE_EXAMPLES: dict[str, str] = {
    SIL: "(pause)", "IY": "see", "IH": "sit", "EH": "bed", "AE": "cat", "AA": "father, lot", "AO": "thought",
    "AH": "but, sofa", "UH": "book", "UW": "shoe", "ER": "bird", "EY": "day", "AY": "my", "OY": "boy", "AW": "how",
    "OW": "go", "P": "pie", "B": "buy", "T": "tie", "D": "die", "K": "key", "G": "go", "DX": "water (US)",
    "CH": "chin", "JH": "judge", "F": "fish", "V": "van", "TH": "thin", "DH": "the", "S": "sea", "Z": "zoo",
    "SH": "she", "ZH": "measure", "HH": "house", "M": "man", "N": "no", "NG": "sing", "L": "leg", "R": "red",
    "W": "wet", "Y": "yes",
}  # fmt: skip

# espeak-ng's IPA phoneme names (as reported by its phoneme events, which follow each accent's realization) to
# PHONES. Every segment keeps one label: a centring or r-coloured vowel that espeak produces as one phoneme
# ("eə", "ɛɹ", "ɑːɹ") is labelled with its vowel, not split into vowel + R. Pauses have an empty IPA name.
IPA_TO_PHONE: dict[str, str] = {
    "": SIL,
    # close and mid front vowels
    "i": "IY", "iː": "IY",
    "ɪ": "IH", "ᵻ": "IH", "iə": "IH", "ɪə": "IH", "ɪɹ": "IH",
    "ɛ": "EH", "e": "EH", "eə": "EH", "ɛə": "EH", "ɛɹ": "EH",
    # open vowels ("trap" -> AE; "lot", "palm", "start" -> AA; "thought", "north" -> AO)
    "æ": "AE", "a": "AE",
    "ɑ": "AA", "ɑː": "AA", "ɑːɹ": "AA", "ɑə": "AA", "ɒ": "AA", "a:": "AA", "aː": "AA", "aa": "AA",
    "ɔ": "AO", "ɔː": "AO", "ɔːɹ": "AO", "oːɹ": "AO", "ɔə": "AO", "oə": "AO",
    # central vowels ("strut" and schwa -> AH; "nurse" and r-coloured schwa -> ER)
    "ʌ": "AH", "ə": "AH", "ɐ": "AH",
    "ɜ": "ER", "ɜː": "ER", "ɚ": "ER", "əɹ": "ER", "ʌɹ": "ER",
    # back vowels
    "ʊ": "UH", "ʊə": "UH", "ʊɹ": "UH",
    "u": "UW", "uː": "UW", "ʉ": "UW", "ʉː": "UW", "ʉɹ": "UW",
    # diphthongs (accent variants of one lexical set share a label: NYC "face" əɪ, Lancaster "mouth" æʊ, ...)
    "eɪ": "EY", "eː": "EY", "əɪ": "EY",
    "aɪ": "AY", "aɪə": "AY", "ɑɪ": "AY", "ɐɪ": "AY",
    "ɔɪ": "OY", "oɪ": "OY",
    "aʊ": "AW", "æʊ": "AW", "ʌʉ": "AW", "ɐʊ": "AW",
    "oʊ": "OW", "əʊ": "OW", "o": "OW", "oː": "OW",
    # stops, flap, glottal stop (espeak's realization of /t/ in "button"), affricates
    "p": "P", "b": "B", "t": "T", "t̪": "T", "ʔ": "T", "d": "D", "d̪": "D", "k": "K", "ɡ": "G", "g": "G",
    "ɾ": "DX",
    "tʃ": "CH", "dʒ": "JH",
    # fricatives
    "f": "F", "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "x": "HH",
    # nasals (syllabic n -> N), liquids (syllabic l -> L; tapped or trilled r -> R), glides
    "m": "M", "n": "N", "n̩": "N", "ŋ": "NG",
    "l": "L", "əl": "L", "ɫ": "L", "ɹ": "R", "r": "R",
    "w": "W", "ʍ": "W", "j": "Y", "ʲ": "Y",
}  # fmt: skip


# Phonemes whose IPA name is empty, by mnemonic: the pauses, and the linking palatal glide espeak inserts
# between a close front vowel and a following vowel ("Lucy_and", "Fiona"), which is sound, not silence.
EMPTY_IPA_TO_PHONE: dict[str, str] = {"_": SIL, "_:": SIL, ";": "Y"}
MIN_SILENCE = 2e-3  # seconds: shorter runs of zero samples are waveform zero crossings, not synthesized silence


class UnknownPhonemeError(UserError, ValueError):
    """espeak-ng reported a phoneme that the mappings do not cover."""


# Stress marks: espeak-ng releases after 1.51 prefix the name of a stressed vowel with them (mnemonic "'aU").
_IPA_STRESS = str.maketrans("", "", "\u02c8\u02cc")  # primary and secondary stress
_MNEMONIC_STRESS = str.maketrans("", "", "',%=")


def phone_of(ipa: str, mnemonic: str) -> str:
    """The inventory label of one espeak-ng phoneme, from its IPA name (its mnemonic when the IPA is empty)."""
    ipa, mnemonic = ipa.translate(_IPA_STRESS), mnemonic.translate(_MNEMONIC_STRESS)
    table, key = (IPA_TO_PHONE, ipa) if ipa else (EMPTY_IPA_TO_PHONE, mnemonic)
    try:
        return table[key]
    except KeyError:
        raise UnknownPhonemeError(
            f"no label for espeak-ng phoneme {ipa!r} (mnemonic {mnemonic!r}): add it to IPA_TO_PHONE"
        ) from None


@dataclass(frozen=True)
class Segment:
    """A phone over samples [start, end)."""

    phone: str
    start: int
    end: int


def merge_segments(segments: Sequence[Segment]) -> list[Segment]:
    """Drop empty segments and join neighbours with the same label (a pause next to a pause, "t" "t", ...)."""
    merged: list[Segment] = []
    for segment in segments:
        if segment.end <= segment.start:
            continue
        if merged and merged[-1].phone == segment.phone:
            merged[-1] = Segment(segment.phone, merged[-1].start, segment.end)
        else:
            merged.append(segment)
    return merged


def native_segments(synthesis: Synthesis, labels: Sequence[str]) -> list[Segment]:
    """Labelled segments covering the synthesizer's output, at its own rate.

    An event marks where its phoneme's sound starts, and the phoneme lasts until the next event. espeak emits a
    phoneme's pre-pause (the closure of a stop, a short gap at a word boundary) as digital silence just before
    that phoneme's event; such a run of zero samples, when it follows another phone, is given to the phoneme it
    precedes, so a stop's closure belongs to the stop rather than to the vowel before it.
    """
    samples = synthesis.samples
    total = len(samples)
    starts = [min(sample, total) for sample, _ in synthesis.events]
    bounds = [0, *starts, total]
    phones = [SIL, *labels]
    nonzero = np.flatnonzero(samples)
    min_run = round(MIN_SILENCE * synthesis.sample_rate)
    for i in range(1, len(phones)):
        if phones[i - 1] == SIL or bounds[i] >= total:
            continue
        before = np.searchsorted(nonzero, bounds[i]) - 1
        run_start = int(nonzero[before]) + 1 if before >= 0 else 0
        if bounds[i] - run_start >= min_run and run_start > bounds[i - 1]:
            bounds[i] = run_start
    return merge_segments([Segment(p, bounds[i], bounds[i + 1]) for i, p in enumerate(phones)])


def frame_labels(segments: Sequence[Segment], num_samples: int) -> list[str]:
    """One label per 10 ms frame: the phone at the frame's centre. num_samples // 160 frames."""
    num_frames = num_samples // FRAME_SAMPLES
    centres = np.arange(num_frames) * FRAME_SAMPLES + FRAME_SAMPLES // 2
    starts = np.array([s.start for s in segments])
    index = np.searchsorted(starts, centres, side="right") - 1
    return [segments[i].phone for i in index]
