"""What the benchmarks run on: noise corpora with their manifests, and random reference models converted for JAX.

Random weights and noise: speed does not depend on them, and nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000


def librispeech_like_lengths(rows: int, seed: int = 0) -> np.ndarray:
    """Utterance lengths in samples: lognormal around 12 s, kept within 1-35 s (LibriSpeech's training range)."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(12.0), 0.45, rows), 1.0, 35.0)
    return (seconds * SAMPLE_RATE).astype(np.int64)


def uniform_lengths(rng: np.random.Generator, count: int, low_s: float = 1.0, high_s: float = 8.0) -> Iterable[int]:
    """`count` lengths in samples, uniform within `low_s`-`high_s` seconds, drawn from `rng` one at a time."""
    return (int(rng.uniform(low_s, high_s) * SAMPLE_RATE) for _ in range(count))


def write_corpus(directory: Path, lengths: Iterable[int], rng: np.random.Generator) -> Path:
    """One 16-bit noise wav file per length (in samples) in `directory`, and their CSV manifest (returned).

    The lengths may be drawn lazily from `rng` itself: each file's noise is drawn right after its length.
    """
    import soundfile as sf

    rows = ["fileid,path,num_samples"]
    for i, length in enumerate(lengths):
        path = directory / f"utt{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(length)).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"utt{i},{path},{length}")
    manifest = directory / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def manifest_files(manifest: Path) -> list[tuple[str, Path]]:
    """(fileid, path) of each row of a manifest that `write_corpus` wrote."""
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    return [(fileid, Path(path)) for fileid, path, _ in rows]


def random_reference_checkpoint(path: Path) -> Path:
    """A reference SpidR base with random weights (seed 0), saved as the released `.pt` files are."""
    import torch
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    torch.manual_seed(0)
    torch.save({"model": SpidR(SpidRConfig()).state_dict()}, path)
    return path


def convert_for_jax(checkpoint: Path, directory: Path) -> Path:
    """The reference checkpoint converted into a model directory by the project's CLI (in a child process)."""
    command = [sys.executable, "-m", "spidr_jax.convert", "torch-to-orbax", "--model", "spidr"]
    subprocess.run([*command, str(checkpoint), str(directory)], check=True, capture_output=True)
    return directory


def load_reference(checkpoint: Path) -> tuple[torch.nn.Module, str]:
    """The reference SpidR base with the weights of `checkpoint`, in eval mode on the GPU if any; and the device."""
    import torch
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    model = SpidR(SpidRConfig()).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), device
