"""The bundled demo corpus: short English sentences spoken by espeak-ng, with frame-level phone alignments.

A few hundred utterances (16 kHz FLAC, under 5 MB) from several synthetic speakers, split into `train` and `dev`,
ship inside the package so that a model can be trained and evaluated in minutes on a CPU without downloading
LibriSpeech. `corpus/README.md` describes the files; `python -m spidr_jax.demo.build_corpus` regenerates them.

    from spidr_jax import demo

    demo.manifest_path("train")    # absolute-path CSV manifest (the reference's format), written on first use
    demo.alignments_path("dev")    # "fileid phone phone ..." lines, one phone per 10 ms frame
    demo.item_path("dev")          # ABX item file (ZeroSpeech / fastabx format)
    demo.read_alignments("dev")    # {fileid: [phone per 10 ms frame]}

The committed manifests (`<split>.relative.csv`) hold paths relative to the corpus folder, since the package can
be installed anywhere. The reference's manifest format wants absolute paths, so `manifest_path` writes that
manifest into a cache folder (`$XDG_CACHE_HOME/spidr_jax/demo/` or `~/.cache/spidr_jax/demo/`, one subfolder per
installation) or into a folder you name, rewriting it only when its content would change.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from pathlib import Path

from spidr_jax.errors import InputError

SPLITS = ("train", "dev")
FRAME_STEP_MS = 10  # one alignment label per 10 ms


def corpus_dir() -> Path:
    """The folder that holds the corpus, inside the installed package."""
    return Path(__file__).resolve().parent / "corpus"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: the demo corpus has {', '.join(SPLITS)}")


def relative_manifest_path(split: str) -> Path:
    """The committed manifest of `split`: `fileid,path,num_samples`, paths relative to `corpus_dir()`."""
    _check_split(split)
    return corpus_dir() / f"{split}.relative.csv"


def alignments_path(split: str) -> Path:
    """The frame-level phone alignments of `split`: one `fileid phone phone ...` line per utterance."""
    _check_split(split)
    return corpus_dir() / f"{split}.alignments.txt"


def item_path(split: str) -> Path:
    """The ABX item file of `split` (`#file onset offset #phone prev-phone next-phone speaker`)."""
    _check_split(split)
    return corpus_dir() / f"{split}.item"


def phones() -> list[str]:
    """The phone inventory, in the order of `phones.txt` (SIL first)."""
    return (corpus_dir() / "phones.txt").read_text(encoding="utf-8").split()


def read_alignments(split: str) -> dict[str, list[str]]:
    """{fileid: one phone label per 10 ms frame} for `split`."""
    alignments = {}
    with alignments_path(split).open(encoding="utf-8") as f:
        for line in f:
            fileid, *labels = line.split()
            alignments[fileid] = labels
    return alignments


def _absolute_manifest(split: str) -> str:
    """The manifest of `split` in the reference's format (`fileid,path,num_samples`, absolute paths)."""
    corpus = corpus_dir()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")  # quotes a path that holds a comma
    writer.writerow(["fileid", "path", "num_samples"])
    with relative_manifest_path(split).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            writer.writerow([row["fileid"], str(corpus / row["path"]), row["num_samples"]])
    return out.getvalue()


def default_cache_dir() -> Path:
    """Where `manifest_path` writes by default: a subfolder per installation of the package."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # Two installations (virtual environments, checkouts) must not overwrite each other's manifests.
    installation = hashlib.sha256(str(corpus_dir()).encode()).hexdigest()[:12]
    return base / "spidr_jax" / "demo" / installation


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so that a concurrent reader never sees a half-written manifest.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(text)
    Path(f.name).replace(path)


def manifest_path(split: str = "train", directory: str | Path | None = None) -> Path:
    """The path of a manifest of `split` in the reference's format, with absolute paths to the audio files.

    The manifest is written as `<directory>/<split>.csv` (by default in `default_cache_dir()`, falling back to the
    system's temporary folder when that is not writable) the first time, and again only if the package has moved.
    """
    _check_split(split)
    text = _absolute_manifest(split)
    if directory is not None:
        path = Path(directory) / f"{split}.csv"
        _write_if_changed(path, text)
        return path
    path = default_cache_dir() / f"{split}.csv"
    try:
        _write_if_changed(path, text)
    except OSError:
        path = Path(tempfile.gettempdir()) / "spidr_jax_demo" / path.parent.name / f"{split}.csv"
        _write_if_changed(path, text)
    return path


__all__ = [
    "FRAME_STEP_MS",
    "SPLITS",
    "alignments_path",
    "corpus_dir",
    "default_cache_dir",
    "item_path",
    "manifest_path",
    "phones",
    "read_alignments",
    "relative_manifest_path",
]
