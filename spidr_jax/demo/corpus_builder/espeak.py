"""libespeak-ng through ctypes (speak_lib.h): synthesis that records the phoneme events.

`Espeak.synthesize` speaks one text synchronously and returns a `Synthesis`: the int16 samples at the
synthesizer's rate (22,050 Hz) and every `espeakEVENT_PHONEME` event, that is the sample where a phoneme's sound
starts and the phoneme's name, in IPA or in espeak's mnemonics. The library is the system's (Debian/Ubuntu
`libespeak-ng1`, found by `ctypes.util.find_library`), the one in the `espeakng-loader` wheel, or a path given
with `--library`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

from spidr_jax.errors import InputError, UserError

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


class EspeakUnavailableError(UserError, RuntimeError):
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
            raise InputError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices=en`)")
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
