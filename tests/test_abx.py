"""ABX through fastabx on synthetic tokens: separable phones give ~0 error, random features ~0.5."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from spidr_jax.evaluate.abx import abx_error, item_fileids

PHONES = ["a", "e", "i", "o", "u", "s"]
FRAMES_PER_PHONE = 5  # 0.1 s phones at 50 Hz


def make_corpus(tmp_path, seed=0, *, speakers=("s1", "s2", "s3"), files_per_speaker=3, phones_per_file=30):
    """An item file and, per file, phone-prototype features, matching unit ids, and random features."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(len(PHONES), 16))
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    separable, units, random = {}, {}, {}
    for speaker in speakers:
        speaker_shift = 0.1 * rng.normal(size=16)  # a small speaker effect that must not matter
        for f in range(files_per_speaker):
            fileid = f"{speaker}_{f}"
            sequence = rng.integers(0, len(PHONES), phones_per_file)
            frames = np.repeat(sequence, FRAMES_PER_PHONE)
            separable[fileid] = (prototypes[frames] + speaker_shift + 0.05 * rng.normal(size=(len(frames), 16))).astype(
                np.float32
            )
            units[fileid] = frames.astype(np.int64)
            random[fileid] = rng.normal(size=(len(frames), 16)).astype(np.float32)
            step = FRAMES_PER_PHONE * 0.02
            for j in range(1, phones_per_file - 1):
                prev, cur, nxt = (PHONES[sequence[i]] for i in (j - 1, j, j + 1))
                lines.append(f"{fileid} {j * step:.2f} {(j + 1) * step:.2f} {cur} {prev} {nxt} {speaker}")
    item = tmp_path / "tokens.item"
    item.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return item, separable, units, random


def test_missing_fastabx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastabx", None)  # makes `import fastabx` fail
    item, separable, _, _ = make_corpus(tmp_path)
    with pytest.raises(ImportError, match=r"ABX needs fastabx \(Python >= 3.12\): pip install 'spidr-jax\[abx\]'"):
        abx_error(item, separable, speaker="within")


def test_item_fileids(tmp_path):
    item, separable, _, _ = make_corpus(tmp_path)
    assert item_fileids(item) == set(separable)
    bad = tmp_path / "bad.item"
    bad.write_text("file onset offset\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        item_fileids(bad)


@pytest.mark.parametrize("speaker", ["within", "across"])
def test_separable_features_and_units(tmp_path, speaker):
    pytest.importorskip("fastabx")
    item, separable, units, _ = make_corpus(tmp_path)
    assert abx_error(item, separable, speaker=speaker) == pytest.approx(0.0, abs=1e-6)
    assert abx_error(item, separable, speaker=speaker, distance="euclidean") == pytest.approx(0.0, abs=1e-6)
    assert abx_error(item, units, speaker=speaker) == pytest.approx(0.0, abs=1e-6)
    column_units = {k: v[:, None] for k, v in units.items()}
    assert abx_error(item, column_units, speaker=speaker) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("speaker", ["within", "across"])
def test_random_features_are_at_chance(tmp_path, speaker):
    pytest.importorskip("fastabx")
    item, _, _, random = make_corpus(tmp_path, seed=1, files_per_speaker=6, phones_per_file=60)
    error = abx_error(item, random, speaker=speaker, context="any", max_size_group=None, max_x_across=None)
    assert error == pytest.approx(0.5, abs=0.03)


def test_input_errors(tmp_path):
    pytest.importorskip("fastabx")
    item, separable, units, _ = make_corpus(tmp_path)
    with pytest.raises(KeyError, match="have no features: s1_0"):
        abx_error(item, {k: v for k, v in separable.items() if k != "s1_0"}, speaker="within")
    mixed = dict(separable)
    mixed["s1_0"] = units["s1_0"]
    with pytest.raises(ValueError, match="Mix of unit ids"):
        abx_error(item, mixed, speaker="within")
    with pytest.raises(ValueError, match="0/1 distance"):
        abx_error(item, units, speaker="within", distance="euclidean")
    with pytest.raises(ValueError, match="integer unit ids"):
        abx_error(item, {k: v.astype(np.float32) for k, v in units.items()}, speaker="within")
    with pytest.raises(ValueError, match="speaker"):
        abx_error(item, separable, speaker="both")
