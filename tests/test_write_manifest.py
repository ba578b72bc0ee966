"""Writing manifests for directories and tar archives, in Python and from the command line."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.data.audio import read_audio, read_audio_file
from spidr_jax.data.manifest import ManifestRow, read_manifest
from spidr_jax.data.scan import scan_manifest
from spidr_jax.data.write_manifest import WriteManifestError, write_manifest

REPO = Path(__file__).resolve().parents[1]
LENGTHS = {"spk2/utt1": 3200, "spk1/utt2": 1600, "spk1/utt1": 4800, "top": 800}


def make_dataset(root: Path, suffix: str = ".wav") -> Path:
    """Small noise files in nested folders, plus a distractor with another extension."""
    rng = np.random.default_rng(0)
    for name, length in LENGTHS.items():
        path = root / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rng.uniform(-0.5, 0.5, length), 16000, subtype="PCM_16")
    (root / "spk1" / "notes.txt").write_text("not audio")
    return root


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "spidr_jax.manifest", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False, timeout=60)


def test_directory_csv_round_trip(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    output = tmp_path / "manifest.csv"
    assert write_manifest(dataset, output, progress=False) == 4
    lines = output.read_text().splitlines()
    assert lines[0] == "fileid,path,num_samples"
    assert lines[1] == f"utt1,{dataset.resolve()}/spk1/utt1.wav,4800"
    rows = read_manifest(output)
    assert [row.path for row in rows] == sorted(str(dataset.resolve() / f"{name}.wav") for name in LENGTHS)
    expected = [("utt1", 4800), ("utt2", 1600), ("utt1", 3200), ("top", 800)]
    assert [(row.fileid, row.num_samples) for row in rows] == expected
    assert all(Path(row.path).is_absolute() and row.archive is None for row in rows)
    assert scan_manifest(rows, progress=False).ok


def test_fairseq_round_trip_with_flac(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data", suffix=".flac")
    output = tmp_path / "manifest.tsv"
    assert write_manifest(dataset, output, ext=".flac", fairseq=True, progress=False) == 4
    lines = output.read_text().splitlines()
    assert lines[:2] == [str(dataset.resolve()), "spk1/utt1.flac\t4800"]
    rows = read_manifest(output)
    assert rows[0] == ManifestRow("spk1/utt1.flac", f"{dataset.resolve()}/spk1/utt1.flac", 4800)
    assert {row.fileid.removesuffix(".flac"): row.num_samples for row in rows} == LENGTHS
    assert scan_manifest(rows, progress=False).ok


def test_tar_round_trip_decodes_like_the_files(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(dataset, arcname="data")
    output = tmp_path / "manifest.csv"
    assert write_manifest(archive, output, progress=False) == 4
    assert output.read_text().splitlines()[0] == "fileid,path,num_samples,archive,byte_offset,byte_size"
    rows = read_manifest(output)
    assert [row.path for row in rows] == sorted(f"data/{name}.wav" for name in LENGTHS)
    for row in rows:
        assert row.archive == str(archive.resolve())
        assert row.num_samples == LENGTHS[row.path.removeprefix("data/").removesuffix(".wav")]
        assert row.fileid == Path(row.path).stem
        np.testing.assert_array_equal(read_audio(row), read_audio_file(tmp_path / row.path))
    assert scan_manifest(rows, progress=False).ok


def test_python_errors(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    with pytest.raises(WriteManifestError, match=r"data: no file ending in '\.ogg'"):
        write_manifest(dataset, tmp_path / "m.csv", ext=".ogg", progress=False)
    with pytest.raises(WriteManifestError, match=r"m\.tsv: a CSV manifest must end in \.csv"):
        write_manifest(dataset, tmp_path / "m.tsv", progress=False)
    with pytest.raises(WriteManifestError, match=r"directory .*nowhere does not exist"):
        write_manifest(dataset, tmp_path / "nowhere" / "m.csv", progress=False)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(dataset / "top.wav", arcname="top.wav")
    with pytest.raises(WriteManifestError, match=r"data\.tar: fairseq manifests are for directories"):
        write_manifest(archive, tmp_path / "m.tsv", fairseq=True, progress=False)
    with pytest.raises(WriteManifestError, match=r"data\.tar: no member ending in '\.flac'"):
        write_manifest(archive, tmp_path / "m.csv", ext=".flac", progress=False)
    assert not list(tmp_path.glob("m.*"))


def test_cli_writes_a_manifest(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(dataset, arcname=".")
    result = cli(archive, tmp_path / "tar.csv", "--ext", ".wav")
    assert result.returncode == 0, result.stderr
    assert "Wrote 4 rows" in result.stderr
    assert len(read_manifest(tmp_path / "tar.csv")) == 4
    result = cli(dataset, tmp_path / "dir.tsv", "--fairseq")
    assert result.returncode == 0, result.stderr
    assert len(read_manifest(tmp_path / "dir.tsv")) == 4


def test_cli_help() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for option in ("dataset", "output", "--ext", "--fairseq"):
        assert option in result.stdout


def assert_fails_cleanly(tmp_path: Path, dataset: Path, named: str, *extra: str) -> None:
    """Exit status 1, one stderr line naming the culprit, and nothing left in the output directory."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    result = cli(dataset, out_dir / "manifest.csv", *extra)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert named in lines[0]
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow
def test_cli_errors(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    assert_fails_cleanly(tmp_path, dataset, str(dataset), "--ext", ".mp3")
    not_tar = dataset / "spk1" / "notes.txt"
    assert_fails_cleanly(tmp_path, not_tar, "notes.txt: neither a directory nor a tar archive")
    assert_fails_cleanly(tmp_path, tmp_path / "absent", "absent: no such directory or file")
    compressed = tmp_path / "data.tar.gz"
    with tarfile.open(compressed, "w:gz") as tar:
        tar.add(dataset, arcname=".")
    assert_fails_cleanly(tmp_path, compressed, "data.tar.gz: gzip-compressed")
    corrupt = dataset / "spk2" / "broken.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt nonsense")
    assert_fails_cleanly(tmp_path, dataset, "broken.wav: unreadable audio")
