"""A tiny converted model and a few short audio files for extraction tests, and the CLI run in this process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.config.model import SpidRConfig
from spidr_jax.extract import cli as extract
from spidr_jax.models import build_model
from spidr_jax.pretrained import model_state_tree, save_pretrained
from tests.processes import LAUNCHER_PREFIXES

# configs/tiny.py's model with 2 of its 4 layers: what the extraction code does does not depend on the size.
TINY = SpidRConfig(
    extractor_conv_layer_config=((32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)),
    encoder_embed_dim=48,
    encoder_num_heads=2,
    encoder_ff_interm_features=96,
    encoder_num_layers=3,
    encoder_pos_conv_kernel=16,
    encoder_pos_conv_groups=4,
    encoder_pos_conv_depth=2,
    codebook_size=32,
    num_codebooks=2,
)
QUICK = ["--quiet", "--max-shapes", "2"]  # few compilations; no progress bar


def hide_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide launcher variables, so that a test run inside a SLURM job does not try to join it."""
    for name in [k for k in os.environ if k.startswith(LAUNCHER_PREFIXES)]:
        monkeypatch.delenv(name)


def tiny_checkpoint(directory: Path) -> Path:
    """A converted directory of a randomly initialized tiny SpidR."""
    return save_pretrained(directory, TINY, model_state_tree(build_model(TINY, seed=0)))


def write_audio(directory: Path, lengths: list[int], seed: int = 0) -> list[str]:
    """16 kHz noise files `u<i>.wav`; the CSV manifest lines (header first)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["fileid,path,num_samples"]
    for i, n in enumerate(lengths):
        path = directory / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16_000, subtype="PCM_16")
        rows.append(f"u{i},{path},{n}")
    return rows


def tiny_corpus(root: Path, lengths: list[int]) -> tuple[Path, Path]:
    """A tiny converted model and a manifest of noise files of `lengths` samples, under `root`."""
    return tiny_checkpoint(root / "model"), write_manifest(root / "m.csv", write_audio(root / "wav", lengths))


def write_manifest(path: Path, rows: list[str]) -> Path:
    """A CSV manifest from its lines."""
    path.write_text("\n".join(rows) + "\n")
    return path


def run_extract(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str]:
    """`python -m spidr_jax.extract ARGS --quiet --max-shapes 2` in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        extract.main([*map(str, args), *QUICK])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


def read_units(path: Path) -> list[dict]:
    """The records of a units.jsonl, checking that every line is complete."""
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]
