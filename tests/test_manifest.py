"""Reading manifests in every format, their error messages, and scanning a manifest's audio."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.data.manifest import ManifestError, ManifestRow, read_manifest
from spidr_jax.data.scan import (
    LENGTH_MISMATCH,
    NOT_MONO,
    SAMPLE_RATE_MISMATCH,
    UNREADABLE,
    format_problems,
    scan_manifest,
)


def test_csv_files(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text('fileid,path,num_samples\na,/data/a.wav,16000\n"b,c","/data/with, comma.wav",8000\n')
    assert read_manifest(manifest) == [
        ManifestRow("a", "/data/a.wav", 16000),
        ManifestRow("b,c", "/data/with, comma.wav", 8000),
    ]


def test_csv_archive(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "fileid,path,num_samples,archive,byte_offset,byte_size\n"
        "a,sub/a.wav,16000,/data/x.tar,512,32044\n"
        "b,b.wav,800,/data/x.tar,33280,1644\n"
    )
    rows = read_manifest(str(manifest))
    assert rows[0] == ManifestRow("a", "sub/a.wav", 16000, "/data/x.tar", 512, 32044)
    assert rows[1].in_archive
    assert rows[1].location == "b.wav (in /data/x.tar)"


def test_csv_column_order_and_extra_columns_do_not_matter(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("num_samples,speaker,path,fileid\n12,s1,/a.wav,a\n")
    assert read_manifest(manifest) == [ManifestRow("a", "/a.wav", 12)]


def test_fairseq_tsv(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"{root}\nspk1/a.flac\t16000\nb.flac\t320\n\n")
    assert read_manifest(manifest) == [
        ManifestRow("spk1/a.flac", f"{root}{os.sep}spk1/a.flac", 16000),
        ManifestRow("b.flac", f"{root}{os.sep}b.flac", 320),
    ]


def test_jsonl(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    records = [
        {"fileid": "a", "path": "/a.wav", "num_samples": 10},
        {"fileid": "b", "path": "b.wav", "num_samples": 20, "archive": "/x.tar", "byte_offset": 0, "byte_size": 5},
    ]
    manifest.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    assert read_manifest(manifest) == [
        ManifestRow("a", "/a.wav", 10),
        ManifestRow("b", "b.wav", 20, "/x.tar", 0, 5),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.txt", "fileid,path,num_samples\n", r"m\.txt: unknown manifest format '\.txt'"),
        ("m.csv", "", r"m\.csv, line 1: empty file"),
        ("m.csv", "fileid,path,num_samples\n", r"m\.csv: no rows"),
        ("m.csv", "fileid,path\na,/a.wav\n", r"m\.csv, line 1: header lacks column\(s\) num_samples"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav,1\nb,/b.wav,1.5\n", r"m\.csv, line 3: num_samples .* '1\.5'"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav,-3\n", r"m\.csv, line 2: num_samples must be non-negative"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav\n", r"m\.csv, line 2: expected 3 fields"),
        ("m.csv", "fileid,path,num_samples,archive\na,/a.wav,1,x.tar\n", r"line 1: .*missing byte_offset, byte_size"),
        ("m.csv", "fileid,path,num_samples,archive,byte_offset,byte_size\na,a.wav,1,x.tar,,9\n", r"line 2: byte_off"),
        ("m.tsv", "", r"m\.tsv, line 1: first line must be the dataset's root directory"),
        ("m.tsv", "/no/such/root\na.wav\t1\n", r"m\.tsv, line 1: root directory /no/such/root does not exist"),
        ("m.jsonl", '{"fileid": "a", "path": "/a.wav", "num_samples": 1}\n{oops\n', r"m\.jsonl, line 2: invalid JSON"),
        ("m.jsonl", '{"fileid": "a", "path": "/a.wav"}\n', r"m\.jsonl, line 1: missing field\(s\) num_samples"),
        ("m.jsonl", '{"fileid": "a", "path": "/a.wav", "num_samples": 1.0}\n', r"line 1: num_samples must be an int"),
        ("m.jsonl", "[1, 2]\n", r"m\.jsonl, line 1: expected a JSON object"),
        ("m.jsonl", "\n", r"m\.jsonl: no rows"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)


def test_tsv_bad_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"{tmp_path}\na.wav\t1\nb.wav 2\nc.wav\tx\n")
    with pytest.raises(ManifestError, match=r"m\.tsv, line 3: expected relative_path<TAB>num_samples"):
        read_manifest(manifest)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"absent\.csv: cannot read"):
        read_manifest(tmp_path / "absent.csv")


def write(path: Path, num_samples: int, sample_rate: int = 16000, channels: int = 1) -> ManifestRow:
    values = np.random.default_rng(num_samples).uniform(-0.3, 0.3, (num_samples, channels))
    sf.write(path, values, sample_rate)
    return ManifestRow(path.stem, str(path), num_samples)


def test_scan_finds_and_counts_problems(tmp_path: Path) -> None:
    good = [write(tmp_path / f"good{i}.wav", 1600 + i) for i in range(5)]
    short = write(tmp_path / "short.wav", 100)
    low_rate = write(tmp_path / "8k.wav", 800, sample_rate=8000)
    stereo = write(tmp_path / "stereo.wav", 1600, channels=2)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    mismatch = write(tmp_path / "mismatch.wav", 1700)
    rows = [
        *good,
        short,
        low_rate,
        stereo,
        ManifestRow("corrupt", str(corrupt), 1600),
        ManifestRow("missing", str(tmp_path / "missing.wav"), 1600),
        ManifestRow("mismatch", mismatch.path, 1600),
    ]
    result = scan_manifest(rows, min_sample_size=500, num_threads=3, progress=False)
    assert result.rows == good
    assert result.num_too_short == 1
    assert result.num_scanned == len(rows) - 1
    assert not result.ok
    assert result.counts == {UNREADABLE: 2, SAMPLE_RATE_MISMATCH: 1, NOT_MONO: 1, LENGTH_MISMATCH: 1}
    reasons = dict(result.problems)
    assert reasons[low_rate.path] == "sample rate is 8000 Hz, expected 16000 Hz"
    assert reasons[stereo.path] == "2 channels, expected mono"
    assert reasons[str(corrupt)].startswith("unreadable audio")
    assert reasons[str(tmp_path / "missing.wav")] == "no such file"
    assert reasons[mismatch.path] == "header has 1700 samples, manifest says 1600"

    summary = format_problems(result, limit=2)
    assert summary.startswith("5 of 10 files have problems:")
    assert "  ... and 3 more" in summary
    assert "sample rate: 1" in summary
    assert "unreadable: 2" in summary
    assert "1 rows shorter than the minimum sample size" in summary
    assert sum(line.startswith("  /") for line in summary.splitlines()) == 2


def test_scan_clean_and_without_audio_checks(tmp_path: Path) -> None:
    rows = [write(tmp_path / f"a{i}.wav", 400 * (i + 1)) for i in range(4)]
    result = scan_manifest(rows, progress=False)
    assert result.ok
    assert result.rows == rows
    assert format_problems(result) == "No problems in 4 files."
    unchecked = [ManifestRow("x", str(tmp_path / "nothing.wav"), 5000), *rows]
    result = scan_manifest(unchecked, min_sample_size=1000, check_audio=False, progress=False)
    assert result.rows == [unchecked[0], *rows[2:]]
    assert result.num_too_short == 2
    assert result.ok
