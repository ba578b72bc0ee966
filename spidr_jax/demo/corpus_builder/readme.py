"""The corpus README: the file formats, and this build's statistics.

The template documents every file that `writers` produces and how the alignments are made; `write_readme` fills
in the numbers (durations, counts, the espeak-ng version, the results of the timing check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spidr_jax.demo.corpus_builder.checks import TimingReport
from spidr_jax.demo.corpus_builder.espeak import Espeak
from spidr_jax.demo.corpus_builder.phones import (
    EMPTY_IPA_TO_PHONE,
    IPA_TO_PHONE,
    PHONE_EXAMPLES,
    PHONES,
    SIL,
    frame_labels,
)
from spidr_jax.demo.corpus_builder.plan import RATE_JITTER, RATE_LIMITS, SAMPLE_RATE, SPEAKERS, SPLITS, BuildOptions
from spidr_jax.demo.corpus_builder.synthesis import Utterance
from spidr_jax.demo.corpus_builder.writers import ITEM_HEADER, MIN_ITEM_DURATION, folder_megabytes, item_lines

# corpus/README.md is this template, filled in: a change here changes the committed file, which the
# regeneration test compares byte for byte.
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
is a stop, rhotic and non-rhotic vowels differ); `IPA_TO_PHONE` in `corpus_builder/phones.py` maps them to labels,
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
