"""Writing the corpus files: FLAC audio, manifests, speakers, the phone list, frame alignments and ABX items.

`write_corpus` writes them into an output folder, replacing a previous corpus there; `readme` adds README.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from spidr_jax.demo.corpus_builder.phones import PHONES, SIL, frame_labels
from spidr_jax.demo.corpus_builder.plan import SAMPLE_RATE, SPEAKERS, SPLITS
from spidr_jax.demo.corpus_builder.synthesis import Utterance

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
