"""Small audio corpora for training tests: tones with a little noise, 1-1.5 s, 16 kHz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_tone_corpus(root: Path, count: int = 24, seed: int = 0) -> list[str]:
    """Write `count` wav files under `root` and return the CSV manifest lines (header first)."""
    rng = np.random.default_rng(seed)
    rows = ["fileid,path,num_samples"]
    for i in range(count):
        n = int(rng.integers(16_000, 24_000))
        t = np.arange(n) / 16_000
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n)
        sf.write(root / f"u{i}.wav", wav.astype(np.float32), 16_000, subtype="PCM_16")
        rows.append(f"u{i},{root / f'u{i}.wav'},{n}")
    return rows
