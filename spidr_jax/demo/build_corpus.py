"""Regenerate the bundled demo corpus: short English sentences spoken by espeak-ng, with phone alignments.

    python -m spidr_jax.demo.build_corpus                  # rewrites spidr_jax/demo/corpus/
    python -m spidr_jax.demo.build_corpus --output /tmp/c --num-utterances 24

Sentences come from a small seeded template grammar (word lists below), so the same seed gives the same corpus.
Each is spoken by one of a few synthetic speakers (an espeak-ng voice and variant at a fixed base pitch and pitch
range) at its own rate. The phone alignments are not estimated: they are the synthesizer's own phoneme events
(`espeakEVENT_PHONEME`: a phoneme's name and the sample where its sound starts), collected through the
libespeak-ng C API while the audio is generated, mapped onto the ARPAbet-style inventory `PHONES` and carried
through the resampling from espeak's 22,050 Hz to 16 kHz. `check_timing` compares them with the signal on every
build.

Generation needs libespeak-ng: the system library (Debian/Ubuntu `libespeak-ng1`, found by
`ctypes.util.find_library`), the `espeakng-loader` wheel, or `--library PATH`. Training and evaluation read only
the committed files and need none of this. `corpus/README.md`, written by this script, documents the formats.
"""

# The phone mappings hold IPA symbols that look like ASCII letters (script a and g, small capital I, the length
# mark); they are meant.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import csv
import ctypes
import ctypes.util
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from spidr_jax.progress import track

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 160  # one alignment label per 10 ms
SPLITS = ("train", "dev")
SIL = "SIL"
_T = TypeVar("_T")

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


# ---------------------------------------------------------------------------------------------------------------
# Sentences: a seeded template grammar. Word lists are chosen to cover the inventory (ZH in "treasure", OY in
# "coin", DX in US "water", ...).


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _verbs(text: str) -> tuple[tuple[str, str], ...]:
    """(base, past) pairs from "base/past base/past ..."."""
    return tuple((pair.split("/")[0], pair.split("/")[1]) for pair in text.split())


_NAMES = _words(
    "John Mary Peter Susan Thomas Lucy George Rachel Oliver Emma Joseph Judy Charles Zoe Vincent Shelley Howard "
    "Joyce Ethan Beth Arthur Nora Hugo Kate Martin Julia Victor Agnes Roger Ivy Walter Fiona Betty"
)
_ANIMATE = _words(
    "cat dog boy girl king queen farmer doctor teacher sailor child baker pilot singer judge nurse fox horse bird "
    "goat mouse sheep frog bear tiger duck robot waiter father mother neighbour soldier player thief owl monkey"
)
_THINGS = _words(
    "book coin ring chair table window bottle letter jacket ladder basket bridge wagon kettle pillow candle mirror "
    "treasure violin pencil orange cookie blanket rope shoe watch clock key map bag cup box hat drum boat ship car "
    "truck train wheel feather toy fork knife spoon glove shovel puzzle jar cheese bread soup apple lemon cake "
    "paper photo radio garage engine thread television collage water butter"
)
_PLACES = _words(
    "kitchen garden village market river station forest beach harbour valley church school museum hallway "
    "mountain castle office cellar bakery library island farm town park shop hotel theatre field house yard city"
)
_ADJECTIVES = _words(
    "red big small old young quiet noisy heavy thin thick happy angry lazy clever yellow purple shiny muddy smooth "
    "rough wooden golden broken ancient gentle hungry frozen beige sleepy tiny huge brave cheap fresh wet dry soft "
    "sharp warm cold dirty pretty strange bright dark loud round new casual unusual little"
)
_TRANSITIVE = _verbs(
    "find/found lose/lost fix/fixed wash/washed paint/painted carry/carried push/pushed pull/pulled drop/dropped "
    "open/opened close/closed watch/watched chase/chased catch/caught buy/bought sell/sold move/moved kick/kicked "
    "hide/hid take/took throw/threw grab/grabbed clean/cleaned borrow/borrowed drag/dragged touch/touched "
    "measure/measured enjoy/enjoyed share/shared change/changed check/checked bring/brought need/needed "
    "want/wanted see/saw keep/kept hold/held leave/left bite/bit use/used"
)
_INTRANSITIVE = _verbs(
    "sleep/slept laugh/laughed jump/jumped sing/sang shout/shouted wait/waited smile/smiled vanish/vanished "
    "arrive/arrived escape/escaped dance/danced whisper/whispered sneeze/sneezed yawn/yawned cough/coughed run/ran "
    "swim/swam fall/fell sit/sat work/worked play/played cry/cried rest/rested leave/left"
)
_ADVERBS = (
    *_words(
        "quickly slowly quietly loudly early today again yesterday twice gently happily usually often later casually"
    ),
    *("outside", "at noon", "at night", "on Thursday", "last June"),
)
_NUMBERS = _words("two three four five six seven eight nine ten twelve twenty thirty")
_PLURALS = {"child": "children", "mouse": "mice", "sheep": "sheep", "thief": "thieves", "knife": "knives"}

_TEMPLATES = (
    "The {adj} {animate} {ipast}.",
    "{name} {past} the {thing}.",
    "{name} {ipast} {adv}.",
    "The {animate} {ipast} {adv}.",
    "Did the {animate} {ibase}?",
    "Please {base} the {thing}.",
    "Where is the {thing}?",
    "{name} and {name2} {ipast}.",
    "The {thing} was {adj}.",
    "My {animate} {past} it.",
    "{number} {animates} {ipast}.",
    "{name} saw {a_adj} {animate}.",
    "Why did {name} {ibase}?",
    "{name}, {base} the {thing}.",
    "Yes, the {animate} {ipast}.",
    "Well, the {thing} is {adj}.",
    "Who {past} the {thing}?",
    "The {thing} is in the {place}.",
    "No, {name} {past} the {thing}.",
    "{name} {past} {number} {things}.",
    "Look at the {adj} {thing}!",
    "Our {animate} is {adj}.",
    "It was {a_adj} {thing}.",
)


def _plural(noun: str) -> str:
    if noun in _PLURALS:
        return _PLURALS[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _pick(rng: np.random.Generator, words: Sequence[_T]) -> _T:
    return words[int(rng.integers(len(words)))]


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence from a random template, with random words."""
    template = _pick(rng, _TEMPLATES)
    name, name2 = (str(n) for n in rng.choice(_NAMES, size=2, replace=False))
    adj = _pick(rng, _ADJECTIVES)
    base, past = _pick(rng, _TRANSITIVE)
    ibase, ipast = _pick(rng, _INTRANSITIVE)
    animate = _pick(rng, _ANIMATE)
    sentence = template.format(
        name=name,
        name2=name2,
        adj=adj,
        a_adj=("an " if adj[0] in "aeiou" else "a ") + adj,
        base=base,
        past=past,
        ibase=ibase,
        ipast=ipast,
        thing=_pick(rng, _THINGS),
        things=_plural(_pick(rng, _THINGS)),
        animate=animate,
        animates=_plural(animate),
        place=_pick(rng, _PLACES),
        adv=_pick(rng, _ADVERBS),
        number=_pick(rng, _NUMBERS),
    )
    return sentence[0].upper() + sentence[1:]


def make_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct sentences, in generation order."""
    seen: dict[str, None] = {}
    for _ in range(count * 100):
        seen.setdefault(make_sentence(rng))
        if len(seen) == count:
            return list(seen)
    raise ValueError(f"the grammar produced only {len(seen)} distinct sentences; ask for fewer than {count}")


# ---------------------------------------------------------------------------------------------------------------
# libespeak-ng through ctypes (speak_lib.h).

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # the same instant in samples at the synthesizer's rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakUnavailableError(RuntimeError):
    """libespeak-ng could not be found or loaded."""


def _locate_espeak(library: str | None) -> tuple[str, str | None]:
    """(library path, data path or None for the library's default)."""
    if library:
        return library, None
    found = ctypes.util.find_library("espeak-ng")
    if found:
        return found, None
    try:
        import espeakng_loader  # noqa: PLC0415 - optional, generation-time only
    except ImportError:
        raise EspeakUnavailableError(
            "libespeak-ng not found: install it (apt-get install libespeak-ng1) or `pip install espeakng-loader`, "
            "or pass --library"
        ) from None
    return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())


def espeak_available(library: str | None = None) -> bool:
    """Whether libespeak-ng can be located (without loading it)."""
    try:
        _locate_espeak(library)
    except EspeakUnavailableError:
        return False
    return True


@dataclass
class Synthesis:
    """One synthesized utterance at the synthesizer's rate: int16 samples and phoneme events."""

    samples: np.ndarray
    sample_rate: int
    events: list[tuple[int, str]]  # (start sample, phoneme name: IPA or espeak mnemonic), in order


class Espeak:
    """Synchronous libespeak-ng synthesis that records phoneme events with their sample positions.

    espeak-ng keeps some state from one utterance to the next (the timing of an utterance depends slightly on the
    ones spoken before it), so a corpus is reproducible when it is generated in the same order in a fresh process.
    """

    def __init__(self, library: str | None = None) -> None:
        path, self._data = _locate_espeak(library)
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as error:
            raise EspeakUnavailableError(f"cannot load {path}: {error}") from error
        self._lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        self._lib.espeak_Info.restype = ctypes.c_char_p
        self._lib.espeak_Info.argtypes = (ctypes.c_void_p,)
        self._lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        self._lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        self._lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _SynthCallback(self._on_audio)  # kept on self: the C side holds only a raw pointer
        self._ipa: bool | None = None
        self._initialize(ipa=True)
        self.version = self._lib.espeak_Info(None).decode()

    def _initialize(self, *, ipa: bool) -> None:
        """(Re)initialize, with phoneme events named in IPA or in espeak's mnemonics."""
        if self._ipa == ipa:
            return
        options = _INITIALIZE_PHONEME_EVENTS | (_INITIALIZE_PHONEME_IPA if ipa else 0)
        data = self._data.encode() if self._data else None
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, options)
        if self.sample_rate <= 0:
            raise EspeakUnavailableError("espeak_Initialize failed")
        self._lib.espeak_SetSynthCallback(self._callback)
        self._ipa = ipa

    def _on_audio(self, wav: ctypes._Pointer, num_samples: int, events: ctypes._Pointer) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                # id.string is 8 bytes, NUL-terminated unless the name fills all 8.
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8")
                self._events.append((event.sample, name))
            i += 1
        return 0

    def synthesize(
        self, text: str, *, voice: str, rate: int, pitch: int, pitch_range: int, ipa: bool = True
    ) -> Synthesis:
        """Speak `text` with the given voice settings; phoneme names in IPA, or in espeak's mnemonics."""
        self._initialize(ipa=ipa)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices=en`)")
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        error = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if error != 0:
            raise RuntimeError(f"espeak_Synth failed ({error}) on {text!r}")
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Synthesis(samples=samples, sample_rate=self.sample_rate, events=list(self._events))


# ---------------------------------------------------------------------------------------------------------------
# From a synthesis to labelled segments and 16 kHz audio.

# Phonemes whose IPA name is empty, by mnemonic: the pauses, and the linking palatal glide espeak inserts
# between a close front vowel and a following vowel ("Lucy_and", "Fiona"), which is sound, not silence.
EMPTY_IPA_TO_PHONE: dict[str, str] = {"_": SIL, "_:": SIL, ";": "Y"}
MIN_SILENCE = 2e-3  # seconds: shorter runs of zero samples are waveform zero crossings, not synthesized silence
ONSET_TOLERANCE = 1e-3  # seconds an onset may lag its event (a noise burst can start on zero-valued samples)


class UnknownPhonemeError(ValueError):
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


def frame_labels(segments: Sequence[Segment], num_samples: int) -> list[str]:
    """One label per 10 ms frame: the phone at the frame's centre. num_samples // 160 frames."""
    num_frames = num_samples // FRAME_SAMPLES
    centres = np.arange(num_frames) * FRAME_SAMPLES + FRAME_SAMPLES // 2
    starts = np.array([s.start for s in segments])
    index = np.searchsorted(starts, centres, side="right") - 1
    return [segments[i].phone for i in index]


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


# ---------------------------------------------------------------------------------------------------------------
# Timing check: the labels must agree with the signal.

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


# ---------------------------------------------------------------------------------------------------------------
# Planning and synthesizing the corpus.


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
        raise ValueError(f"{options.num_utterances} utterances leave none for train after {num_dev} dev ones")
    plan = []
    for index, text in enumerate(sentences):
        split = "dev" if index < num_dev else "train"
        speaker = SPEAKERS[(index if split == "dev" else index - num_dev) % num_speakers]
        rate = int(np.clip(speaker.rate + rng.integers(-RATE_JITTER, RATE_JITTER + 1), *RATE_LIMITS))
        plan.append(Planned(f"{speaker.speaker_id}_{index:04d}", split, speaker, rate, text))
    return plan


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


# ---------------------------------------------------------------------------------------------------------------
# Writing the corpus.


def flac_bytes(audio: np.ndarray) -> bytes:
    """16-bit mono FLAC at 16 kHz, highest compression."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return buffer.getvalue()


def item_lines(utterance: Utterance) -> list[str]:
    """ABX item lines: each non-SIL phone of at least MIN_ITEM_DURATION, its neighbours and the speaker.

    A neighbour is the adjacent segment's label, SIL at a pause or an edge.
    """
    segments = utterance.segments
    lines = []
    for i, segment in enumerate(segments):
        if segment.phone == SIL or segment.end - segment.start < MIN_ITEM_DURATION * SAMPLE_RATE:
            continue
        previous = segments[i - 1].phone if i > 0 else SIL
        following = segments[i + 1].phone if i + 1 < len(segments) else SIL
        lines.append(
            f"{utterance.fileid} {segment.start / SAMPLE_RATE:.4f} {segment.end / SAMPLE_RATE:.4f} "
            f"{segment.phone} {previous} {following} {utterance.speaker.speaker_id}"
        )
    return lines


ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
# fastabx takes the feature frames whose centres fall inside an item and fails on an item that holds none: at
# 50 Hz (20 ms units) every item of 40 ms or more holds one, whichever of its two slicing conventions is used.
MIN_ITEM_DURATION = 0.04
_GENERATED_FILES = (
    "README.md",
    "phones.txt",
    "speakers.csv",
    *(
        f"{split}.{suffix}"
        for split in SPLITS
        for suffix in ("relative.csv", "utterances.csv", "alignments.txt", "item")
    ),
)


def _prepare_output(output: Path) -> None:
    """Create `output`, or clear a previous corpus there; refuse to write into an unrelated non-empty folder."""
    if output.exists() and any(output.iterdir()):
        if not (output / "speakers.csv").is_file():
            raise FileExistsError(f"{output} is not empty and holds no demo corpus; choose another --output")
        for split in SPLITS:
            for path in (output / "audio" / split).glob("*.flac"):
                path.unlink()
        for name in _GENERATED_FILES:
            (output / name).unlink(missing_ok=True)
    for split in SPLITS:
        (output / "audio" / split).mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_corpus(utterances: Sequence[Utterance], output: Path) -> None:
    """Write audio, manifests, alignments, items, speakers and the phone list."""
    _prepare_output(output)
    (output / "phones.txt").write_text("\n".join(PHONES) + "\n", encoding="utf-8")
    _write_csv(
        output / "speakers.csv",
        ["speaker", "voice", "pitch", "pitch_range", "rate"],
        [[s.speaker_id, s.voice, s.pitch, s.pitch_range, s.rate] for s in SPEAKERS],
    )
    for split in SPLITS:
        rows = [u for u in utterances if u.split == split]
        _write_csv(
            output / f"{split}.relative.csv",
            ["fileid", "path", "num_samples"],
            [[u.fileid, f"audio/{split}/{u.fileid}.flac", u.num_samples] for u in rows],
        )
        _write_csv(
            output / f"{split}.utterances.csv",
            ["fileid", "speaker", "rate", "text"],
            [[u.fileid, u.speaker.speaker_id, u.rate, u.text] for u in rows],
        )
        alignments = [" ".join([u.fileid, *frame_labels(u.segments, u.num_samples)]) for u in rows]
        (output / f"{split}.alignments.txt").write_text("\n".join(alignments) + "\n", encoding="utf-8")
        items = [ITEM_HEADER, *(line for u in rows for line in item_lines(u))]
        (output / f"{split}.item").write_text("\n".join(items) + "\n", encoding="utf-8")
        for u in rows:
            (output / "audio" / split / f"{u.fileid}.flac").write_bytes(flac_bytes(u.audio))


def folder_megabytes(folder: Path) -> float:
    """Total size of the files under `folder`, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


_README = """\
# spidr_jax demo corpus

{num_utterances} short English sentences ({seconds:.0f} s, {megabytes:.2f} MB) by {num_speakers} espeak-ng voices,
with frame-level phone alignments and ABX item files: small enough to train and evaluate a model on a CPU in
minutes, without downloading LibriSpeech. This folder is written by
`python -m spidr_jax.demo.build_corpus` (same seed, same corpus); do not edit it by hand.

| split | utterances | seconds | phone items |
|-------|-----------:|--------:|------------:|
{split_rows}

Utterances last {min_seconds:.2f}-{max_seconds:.2f} s (mean {mean_seconds:.2f} s), padding included.
Synthesized with eSpeak NG {espeak_version}, seed {seed}.

## Audio

`audio/<split>/<fileid>.flac`: 16 kHz, mono, 16-bit FLAC. The synthesizer's {native_rate} Hz output is
resampled to 16 kHz (polyphase, zero-phase), padded with {pad_ms} ms of digital silence at each end,
peak-normalized to {peak_text} of full scale and kept at {bits} significant bits (the low {low_bits} bits are
zero, which FLAC stores for free) to fit the size budget. A `fileid` is `<speaker>_<index>`.

## Speakers

`speakers.csv`: `speaker,voice,pitch,pitch_range,rate`. A speaker is an espeak-ng voice with a variant (`voice`,
as given to `espeak_SetVoiceByName`; variants with echo are avoided so that pauses stay silent) at a fixed base
pitch and pitch range (0-100, espeak's scale). `rate` is the speaker's mean rate in words per minute; each
utterance draws its own within +/-{jitter} (limits {rate_min}-{rate_max}), listed in `<split>.utterances.csv`.
Both splits contain every speaker, equally often; no sentence occurs in both splits.

{speaker_rows}

## Files per split (`train`, `dev`)

- `<split>.relative.csv`: `fileid,path,num_samples`, with `path` relative to this folder. The manifest format of
  the reference implementation (`spidr`) wants absolute paths: `spidr_jax.demo.manifest_path(split)` writes that
  manifest (once per installation, in a cache folder) and returns its path.
- `<split>.utterances.csv`: `fileid,speaker,rate,text` (the sentence as given to the synthesizer).
- `<split>.alignments.txt`: one line per utterance, `fileid phone phone ...`, one phone per 10 ms frame:
  frame `i` covers samples `[160 i, 160 i + 160)` and takes the phone at its centre, so an utterance of
  `num_samples` samples has `num_samples // 160` frames. This is the `alignment_step=10` input of `spidr`'s
  `units_quality`, whose units come every 20 ms. Each split uses every label.
- `<split>.item`: ABX items in the ZeroSpeech / fastabx format: the header
  `{item_header}`, then one line per phone occurrence, onset and offset in
  seconds. SIL is not an item but is the neighbour at a pause or an edge. Phones shorter than
  {min_item_ms:.0f} ms ({short_items} of {all_phones} occurrences) are left out, so that every item holds at least one
  frame of 20 ms features (fastabx stops on an empty item); their neighbours still name them as context.

## Phones

`phones.txt` lists the {num_phones} labels: ARPAbet as in the TIMIT/CMU 39-phone set, plus `DX` (the flap of
American "water") and `SIL` (padding and pauses). {phones_used} of them occur here.

The alignments are the synthesizer's own, not a forced aligner's. While it produces the audio, libespeak-ng
reports an event at the start of every phoneme (`espeakEVENT_PHONEME`: the phoneme's name and its sample
position); a phoneme lasts until the next event. Two conventions of espeak are kept or adjusted:

- espeak emits a phoneme's pre-pause (the closure of a stop, a short gap at a word boundary) as digital silence
  just before that phoneme's event. That silence is given to the phoneme it precedes, so a stop's closure is
  part of the stop, as in forced alignments of read speech.
- For a vowel after a liquid or a nasal, espeak reports the vowel after the transition into it; the transition
  stays with the consonant.

Event names are espeak's IPA, which follows each accent's realization (Scottish "r" is trilled, Caribbean "th"
is a stop, rhotic and non-rhotic vowels differ); `IPA_TO_PHONE` in `build_corpus.py` maps them to labels,
folding accent variants of a vowel onto one label. A vowel that espeak produces as one centring or r-coloured
phoneme ("air" `eə`/`ɛɹ`, "car" `ɑːɹ`) keeps one label (EH, AA), without a separate R. Pauses and the linking
glide of "Lucy_and" have no IPA name and are told apart by their mnemonic (`_`, `_:` -> SIL, `;` -> Y). Positions
are scaled to 16 kHz and shifted by the padding; adjacent segments with the same label are merged (in the items
too).

The labels, the espeak-ng phonemes (IPA names) mapped to each, and their number of frames in both splits:

{phone_rows}

## Timing check

Run by the generator on every build:

- In the synthesizer's output, sound resumes after at least 2 ms of digital silence at {onsets} places, and
  {onsets_at_events} of them start within 1 ms after a phoneme event (largest delay {max_onset_delay_ms:.2f} ms: a noise
  burst whose first samples are zero).
- In the 16 kHz audio, {pause_silent:.1%} of the {pause_frames} frames inside pauses between words (labelled SIL) are
  below -60 dBFS.
- Frames labelled S, Z, SH, ZH have {sibilant_high:.0%} of their energy above 4 kHz, vowel frames {vowel_high:.0%}. With
  the labels shifted by up to +/-50 ms, this contrast is largest at {best_lag_ms:+d} ms.
"""


def write_readme(
    utterances: Sequence[Utterance], output: Path, options: BuildOptions, espeak: Espeak, timing: TimingReport
) -> None:
    """Write README.md: the formats and this build's statistics."""
    seconds = np.array([u.num_samples / SAMPLE_RATE for u in utterances])
    split_rows = []
    for split in SPLITS:
        rows = [u for u in utterances if u.split == split]
        split_rows.append(
            f"| {split} | {len(rows)} | {sum(u.num_samples for u in rows) / SAMPLE_RATE:.1f} "
            f"| {sum(len(item_lines(u)) for u in rows)} |"
        )
    speaker_rows = ["| speaker | voice | pitch | range | rate |", "|---|---|--:|--:|--:|"]
    speaker_rows += [f"| {s.speaker_id} | `{s.voice}` | {s.pitch} | {s.pitch_range} | {s.rate} |" for s in SPEAKERS]
    counts = Counter(label for u in utterances for label in frame_labels(u.segments, u.num_samples))
    all_phones = sum(s.phone != SIL for u in utterances for s in u.segments)
    sources: dict[str, list[str]] = {p: [] for p in PHONES}
    for ipa, phone in IPA_TO_PHONE.items():
        if ipa:
            sources[phone].append(ipa)
    for mnemonic, phone in EMPTY_IPA_TO_PHONE.items():
        sources[phone].append(f"`{mnemonic}` (mnemonic)")
    phone_rows = ["| label | as in | espeak-ng phonemes | frames |", "|---|---|---|--:|"]
    phone_rows += [f"| {p} | {PHONE_EXAMPLES[p]} | {' '.join(sources[p])} | {counts.get(p, 0)} |" for p in PHONES]
    lo, hi = options.peak_range
    fields = {
        "num_utterances": len(utterances),
        "seconds": seconds.sum(),
        "megabytes": 0.0,
        "num_speakers": len(SPEAKERS),
        "split_rows": "\n".join(split_rows),
        "min_seconds": seconds.min(),
        "max_seconds": seconds.max(),
        "mean_seconds": seconds.mean(),
        "espeak_version": espeak.version,
        "seed": options.seed,
        "native_rate": f"{espeak.sample_rate:,}",
        "pad_ms": f"{options.pad_range[0] * 1000:.0f}-{options.pad_range[1] * 1000:.0f}",
        "peak_text": f"{lo:.1f}-{hi:.1f}",
        "bits": options.bits,
        "low_bits": 16 - options.bits,
        "jitter": RATE_JITTER,
        "rate_min": RATE_LIMITS[0],
        "rate_max": RATE_LIMITS[1],
        "speaker_rows": "\n".join(speaker_rows),
        "item_header": ITEM_HEADER,
        "min_item_ms": MIN_ITEM_DURATION * 1000,
        "short_items": all_phones - sum(len(item_lines(u)) for u in utterances),
        "all_phones": all_phones,
        "phone_rows": "\n".join(phone_rows),
        "num_phones": len(PHONES),
        "phones_used": len(counts),
        **{name: getattr(timing, name) for name in TimingReport.__dataclass_fields__},
    }
    readme = output / "README.md"
    readme.write_text(_README.format(**fields), encoding="utf-8")
    # Now that every file exists, state the folder's size; "%.2f" keeps the README's length, hence the size.
    fields["megabytes"] = folder_megabytes(output)
    readme.write_text(_README.format(**fields), encoding="utf-8")


def build(output: Path, options: BuildOptions, library: str | None = None) -> tuple[list[Utterance], TimingReport]:
    """Generate the corpus into `output`."""
    espeak = Espeak(library)
    utterances = synthesize_corpus(options, espeak)
    timing = check_timing(utterances)
    write_corpus(utterances, output)
    write_readme(utterances, output, options, espeak, timing)
    return utterances, timing


def _default_output() -> Path:
    return Path(__file__).resolve().parent / "corpus"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m spidr_jax.demo.build_corpus",
        description="Regenerate the demo corpus: espeak-ng speech with the synthesizer's own phone alignments.",
    )
    defaults = BuildOptions()
    parser.add_argument("--output", type=Path, default=_default_output(), help="corpus folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    parser.add_argument(
        "--num-utterances", type=int, default=defaults.num_utterances, help="utterances in all (default: %(default)s)"
    )
    parser.add_argument(
        "--dev-fraction",
        type=float,
        default=defaults.dev_fraction,
        help="share of dev utterances (default: %(default)s)",
    )
    parser.add_argument(
        "--bits", type=int, default=defaults.bits, help="significant bits kept per sample (default: %(default)s)"
    )
    parser.add_argument("--library", help="path to libespeak-ng (default: the system's, else espeakng-loader's)")
    args = parser.parse_args(argv)
    if not 8 <= args.bits <= 16:
        parser.error("--bits must be between 8 and 16")
    options = BuildOptions(
        seed=args.seed, num_utterances=args.num_utterances, dev_fraction=args.dev_fraction, bits=args.bits
    )
    try:
        utterances, timing = build(args.output, options, args.library)
    except (EspeakUnavailableError, FileExistsError, UnknownPhonemeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    seconds = sum(u.num_samples for u in utterances) / SAMPLE_RATE
    num_dev = sum(u.split == "dev" for u in utterances)
    print(
        f"{args.output}: {len(utterances) - num_dev} train + {num_dev} dev utterances, {seconds:.0f} s, "
        f"{folder_megabytes(args.output):.2f} MB; timing: {timing.onsets_at_events}/{timing.onsets} onsets on "
        f"events, {timing.pause_silent:.1%} of pause frames silent, best label lag {timing.best_lag_ms:+d} ms"
    )


if __name__ == "__main__":
    main()
