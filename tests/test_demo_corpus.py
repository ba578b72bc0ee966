"""The bundled demo corpus: sizes, audio, manifests, alignments, ABX items, and its generator."""

from __future__ import annotations

import csv
import filecmp
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax import demo
from spidr_jax.demo.corpus_builder import checks, cli, espeak, phones, plan, writers

CORPUS = demo.corpus_dir()
SAMPLE_RATE = 16_000
MAX_BYTES = 5_000_000


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_items(split: str) -> tuple[str, list[list[str]]]:
    header, *lines = demo.item_path(split).read_text(encoding="utf-8").splitlines()
    return header, [line.split(" ") for line in lines]


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, str]]]:
    return {split: read_csv(demo.relative_manifest_path(split)) for split in demo.SPLITS}


@pytest.fixture(scope="module")
def audio(manifests) -> dict[str, np.ndarray]:
    decoded = {}
    for rows in manifests.values():
        for row in rows:
            decoded[row["fileid"]] = sf.read(CORPUS / row["path"], dtype="int16")[0]
    return decoded


def test_size_budget():
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    assert {p.suffix for p in files} <= {".flac", ".csv", ".txt", ".item", ".md"}


def test_manifests_match_audio(manifests, audio):
    for split, rows in manifests.items():
        assert 40 <= len(rows) <= 400
        flacs = {p.stem for p in (CORPUS / "audio" / split).glob("*.flac")}
        assert {row["fileid"] for row in rows} == flacs
        for row in rows:
            path = CORPUS / row["path"]
            assert row["path"] == f"audio/{split}/{row['fileid']}.flac"
            info = sf.info(path)
            assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", SAMPLE_RATE, 1)
            samples = audio[row["fileid"]]
            assert samples.ndim == 1
            assert len(samples) == info.frames == int(row["num_samples"])
            assert 0.8 * SAMPLE_RATE <= len(samples) <= 3.5 * SAMPLE_RATE
            assert np.abs(samples).max() > 1000  # speech, not silence


def test_phone_inventory_is_the_documented_one():
    assert demo.phones() == list(phones.PHONES)
    assert len(set(phones.PHONES)) == len(phones.PHONES)
    assert set(phones.IPA_TO_PHONE.values()) | set(phones.EMPTY_IPA_TO_PHONE.values()) <= set(phones.PHONES)
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    for phone in phones.PHONES:
        assert f"\n| {phone} | {phones.PHONE_EXAMPLES[phone]} |" in readme


def test_phone_mapping_and_closure_rule():
    """IPA names (with or without stress marks) map to labels; a stop's closure silence goes to the stop."""
    assert phones.phone_of("\u02c8a\u028a", "'aU") == "AW"  # espeak-ng >= 1.52 marks stress
    assert phones.phone_of("", "_:") == "SIL"
    assert phones.phone_of("", ";") == "Y"
    with pytest.raises(phones.UnknownPhonemeError):
        phones.phone_of("q", "q")
    sound = np.full(100, 1000, np.int16)
    samples = np.concatenate([sound, np.zeros(60, np.int16), sound, np.zeros(50, np.int16)])
    synthesis = espeak.Synthesis(samples, 22_050, [(0, "\u00e6"), (160, "t"), (260, "")])
    segments = phones.native_segments(synthesis, ["AE", "T", "SIL"])
    assert [(s.phone, s.start, s.end) for s in segments] == [("AE", 0, 100), ("T", 100, 260), ("SIL", 260, 310)]


def test_alignments_cover_every_frame(manifests):
    inventory = set(demo.phones())
    for split, rows in manifests.items():
        used = set()
        alignments = demo.read_alignments(split)
        assert list(alignments) == [row["fileid"] for row in rows]
        for row in rows:
            labels = alignments[row["fileid"]]
            num_samples = int(row["num_samples"])
            assert len(labels) == num_samples // 160
            assert abs(len(labels) - num_samples / 160) <= 2
            assert set(labels) <= inventory
            assert labels[0] == labels[-1] == "SIL"  # silence padding at both ends
            assert len(set(labels)) >= 5
            used.update(labels)
        # Every split uses every phone: the reference's units_quality needs num_phones to be the number present.
        assert used == inventory, split


def test_alignments_agree_with_the_audio(audio):
    """Pauses are silent and sibilants are hissy where the labels say, not a few frames off."""
    pauses, features = [], []
    for split in demo.SPLITS:
        for fileid, frame_phones in demo.read_alignments(split).items():
            level, high = checks.frame_features(audio[fileid])
            labels = np.array(frame_phones)
            # SIL frames between two phones, two frames away from any phone (padding at the ends excluded).
            speech = np.flatnonzero(labels != "SIL")
            inner = np.zeros(len(labels), bool)
            inner[speech[0] : speech[-1]] = True
            sil = labels == "SIL"
            pause = inner & sil & np.roll(sil, 1) & np.roll(sil, -1) & np.roll(sil, 2) & np.roll(sil, -2)
            pauses.append(level[pause])
            features.append((high, labels))
    pauses = np.concatenate(pauses)
    assert len(pauses) > 200
    assert np.mean(pauses < -60) > 0.99

    def contrast(lag: int) -> float:
        sibilant = np.concatenate([h[np.isin(np.roll(lab, lag), ["S", "Z", "SH", "ZH"])] for h, lab in features])
        vowel = np.concatenate([h[np.isin(np.roll(lab, lag), phones.PHONES[1:16])] for h, lab in features])
        return float(sibilant.mean() - vowel.mean())

    assert contrast(0) > 0.4
    assert contrast(0) > max(contrast(lag) for lag in (-3, -2, -1, 1, 2, 3))


def test_items_parse_and_match_the_alignments(manifests):
    speakers = {row["speaker"] for row in read_csv(CORPUS / "speakers.csv")}
    inventory = set(demo.phones())
    for split, rows in manifests.items():
        lengths = {row["fileid"]: int(row["num_samples"]) / SAMPLE_RATE for row in rows}
        alignments = demo.read_alignments(split)
        header, items = read_items(split)
        assert header == "#file onset offset #phone prev-phone next-phone speaker"
        assert len(items) > 10 * len(rows)
        for fileid, onset, offset, phone, previous, following, speaker in items:
            assert re.fullmatch(r"\d+\.\d{4}", onset)
            assert re.fullmatch(r"\d+\.\d{4}", offset)
            start, end = float(onset), float(offset)
            assert 0 < start < end < lengths[fileid]
            assert end - start >= writers.MIN_ITEM_DURATION - 1e-4
            assert phone in inventory - {"SIL"}
            assert previous in inventory
            assert following in inventory
            assert previous != phone != following  # neighbouring segments with one label are merged
            assert speaker in speakers
            assert fileid.startswith(speaker + "_")
            assert alignments[fileid][int((start + end) / 2 * 100)] == phone


def test_splits_have_every_speaker_and_no_shared_sentence():
    speakers = {row["speaker"]: row for row in read_csv(CORPUS / "speakers.csv")}
    assert len(speakers) >= 4
    texts = {}
    for split in demo.SPLITS:
        rows = read_csv(CORPUS / f"{split}.utterances.csv")
        assert {row["speaker"] for row in rows} == set(speakers)
        assert all(140 <= int(row["rate"]) <= 200 for row in rows)
        texts[split] = {row["text"] for row in rows}
        assert len(texts[split]) == len(rows)
        _, items = read_items(split)
        assert {item[-1] for item in items} == set(speakers)
    assert not texts["train"] & texts["dev"]


def test_manifest_path_writes_absolute_manifest(tmp_path, monkeypatch):
    path = demo.manifest_path("dev", tmp_path / "manifests")
    assert path == tmp_path / "manifests" / "dev.csv"
    rows = read_csv(path)
    assert rows == [{**row, "path": str(CORPUS / row["path"])} for row in read_csv(demo.relative_manifest_path("dev"))]
    for row in rows:
        assert Path(row["path"]).is_absolute()
        assert Path(row["path"]).is_file()
        assert Path(row["path"]).stem == row["fileid"]  # the reference derives fileid from the file name
    written = path.stat().st_mtime_ns
    assert demo.manifest_path("dev", tmp_path / "manifests") == path
    assert path.stat().st_mtime_ns == written  # not rewritten

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    default = demo.manifest_path("train")
    assert default.parent == demo.default_cache_dir()
    assert default.is_relative_to(tmp_path / "cache" / "spidr_jax" / "demo")
    assert len(read_csv(default)) == len(read_csv(demo.relative_manifest_path("train")))
    with pytest.raises(ValueError, match="unknown split"):
        demo.manifest_path("test")


def test_alignments_fit_the_reference_units_quality():
    """The reference's metric accepts the alignments with 20 ms units as a model would produce them."""
    metrics = pytest.importorskip("spidr.models.metrics")
    rows = read_csv(demo.relative_manifest_path("dev"))
    alignments = demo.read_alignments("dev")
    inventory = demo.phones()
    data = {}
    for row in rows:
        labels = alignments[row["fileid"]]
        num_units = (int(row["num_samples"]) - 400) // 320 + 1  # frames of the wav2vec2-style extractor
        units = [inventory.index(labels[min(2 * i, len(labels) - 1)]) for i in range(num_units)]
        data[row["fileid"]] = (labels, units)
    quality = metrics.units_quality(data, num_units=len(inventory), num_phones=len(inventory))
    assert quality.phone_purity > 0.9  # units copied from the labels
    assert quality.pnmi > 0.9


def _corpus_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.skipif(not espeak.espeak_available(), reason="needs libespeak-ng (only to regenerate the corpus)")
def test_generator_small_corpus(tmp_path):
    cli.main(["--output", str(tmp_path), "--num-utterances", "12", "--seed", "3"])
    dev = read_csv(tmp_path / "dev.relative.csv")
    train = read_csv(tmp_path / "train.relative.csv")
    assert len(dev) == len(plan.SPEAKERS)
    assert len(dev) + len(train) == 12
    alignments = (tmp_path / "train.alignments.txt").read_text(encoding="utf-8").splitlines()
    for row, line in zip(train, alignments, strict=True):
        assert line.split()[0] == row["fileid"]
        assert len(line.split()) - 1 == int(row["num_samples"]) // 160
        assert sf.info(tmp_path / row["path"]).frames == int(row["num_samples"])
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "12 short English sentences" in readme
    # A second run into the same folder replaces the corpus; an unrelated folder is refused.
    cli.main(["--output", str(tmp_path), "--num-utterances", "10", "--seed", "3"])
    assert len(list((tmp_path / "audio").rglob("*.flac"))) == 10
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(SystemExit, match="holds no demo corpus"):
        cli.main(["--output", str(tmp_path / "other"), "--num-utterances", "10"])


@pytest.mark.skipif(not espeak.espeak_available(), reason="needs libespeak-ng (only to regenerate the corpus)")
def test_generator_reproduces_the_committed_corpus(tmp_path):
    """Same seed, same espeak-ng: the same corpus (text files identical, audio equal to the quantization step)."""
    version = espeak.Espeak().version
    if f"eSpeak NG {version}," not in (CORPUS / "README.md").read_text(encoding="utf-8"):
        pytest.skip(f"the corpus was made with another espeak-ng version than {version}")
    # A fresh process: espeak-ng carries state from one utterance to the next, so the corpus is reproducible
    # only when generated from the start of a process.
    command = [sys.executable, "-m", "spidr_jax.demo.build_corpus", "--output", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True)
    assert _corpus_files(tmp_path) == _corpus_files(CORPUS)
    for name in _corpus_files(CORPUS):
        if name.endswith(".flac"):
            committed = sf.read(CORPUS / name, dtype="int32")[0]
            regenerated = sf.read(tmp_path / name, dtype="int32")[0]
            assert committed.shape == regenerated.shape
            assert np.abs(committed - regenerated).max() <= 2 ** (16 - plan.BuildOptions().bits)
        else:
            assert filecmp.cmp(CORPUS / name, tmp_path / name, shallow=False), name
