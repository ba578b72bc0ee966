"""Extraction's layouts for the next tools, and its faults: units formats, deduplication, the feature tree, .pt
features, one writer per output, repeated records cut back, manifest order, too-short and non-finite files, and
the exit code when no file could be extracted."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from spidr_jax.data.audio import read_audio_file
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.extract.features_file import tree_names
from spidr_jax.extract.units_file import deduplicate
from spidr_jax.models.extractor import receptive_field
from tests.extraction_setup import TINY, hide_launcher, read_units, run_extract, write_manifest
from tests.extraction_setup import tiny_checkpoint as make_checkpoint
from tests.extraction_setup import write_audio as write_noise

LENGTHS = [4000, 9000, 6400, 12000, 8000]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("extract_outputs")
    return make_checkpoint(root / "model"), write_noise(root / "wav", LENGTHS)


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    hide_launcher(monkeypatch)


def units_args(checkpoint: Path, manifest: Path, out: Path, *extra: str) -> list[str | Path]:
    return ["--checkpoint", checkpoint, "--manifest", manifest, "--output", out, "--layer", "3", "--units", *extra]


def test_deduplicate_collapses_runs_and_counts_their_frames():
    units, durations = deduplicate(np.array([4, 4, 4, 1, 1, 4, 7]))
    assert units.tolist() == [4, 1, 4, 7]
    assert durations.tolist() == [3, 2, 1, 1]
    assert deduplicate(np.array([], np.int32))[0].size == 0


@pytest.mark.slow
def test_units_formats_hold_the_same_units_in_manifest_order(setup, tmp_path, capsys):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    fileids = [row.split(",")[0] for row in rows[1:]]
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "plain"))
    assert code == 0, err
    plain = read_units(tmp_path / "plain" / "units.jsonl")
    assert [record["fileid"] for record in plain] == fileids  # the manifest's order, not the batches' (longest first)
    units = {record["fileid"]: record["units"] for record in plain}

    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "km", "--units-format", "km"))
    assert code == 0, err
    km_lines = (tmp_path / "km" / "units.km").read_text().splitlines()
    assert [list(map(int, line.split())) for line in km_lines] == [units[f] for f in fileids]
    assert (tmp_path / "km" / "dict.km.txt").read_text().splitlines() == [f"{i} 1" for i in range(TINY.codebook_size)]

    args = units_args(checkpoint, manifest, tmp_path / "gslm", "--units-format", "gslm", "--dedup")
    code, err = run_extract(capsys, *args)
    assert code == 0, err
    for line, duration_line, fileid in zip(
        (tmp_path / "gslm" / "units.txt").read_text().splitlines(),
        (tmp_path / "gslm" / "durations.txt").read_text().splitlines(),
        fileids,
        strict=True,
    ):
        name, values = line.split("|")
        assert name == fileid
        collapsed, lengths = deduplicate(np.array(units[fileid]))
        assert list(map(int, values.split())) == collapsed.tolist()
        assert list(map(int, duration_line.split("|")[1].split())) == lengths.tolist()
    deduplicated = read_units(tmp_path / "gslm" / "units.jsonl")
    assert all(sum(record["durations"]) == len(units[record["fileid"]]) for record in deduplicated)

    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "slam", "--units-format", "slamkit"))
    assert code == 0, err
    slam = [json.loads(line) for line in (tmp_path / "slam" / "units.slamkit.jsonl").read_text().splitlines()]
    paths = [row.split(",")[1] for row in rows[1:]]
    assert [record["file_name"] for record in slam] == paths
    for record, fileid in zip(slam, fileids, strict=True):
        collapsed, lengths = deduplicate(np.array(units[fileid]))
        assert record["units"] == collapsed.tolist()
        assert record["duration"] == lengths.tolist()

    # Another format into an output written with one: refused like any other setting.
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "km", "--units-format", "gslm"))
    assert code == 1
    assert "units_format: 'km' there, 'gslm' now" in err


def test_options_of_units_and_features_are_not_mixed(setup, tmp_path, capsys):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    base = ["--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "x", "--layer", "2"]
    code, err = run_extract(capsys, *base, "--dedup")
    assert code == 2
    assert "--dedup apply to units: add --units" in err
    code, err = run_extract(capsys, *base, "--units", "--layout", "tree")
    assert code == 2
    assert "--layout apply to features, not to --units" in err


def test_tree_layout_and_pt_features_equal_the_flat_npy_ones(setup, tmp_path, capsys):
    checkpoint, rows = setup
    # The audio in two folders below one root: the tree keeps them.
    nested = [rows[0]]
    for i, row in enumerate(rows[1:]):
        fileid, path, samples = row.split(",")
        target = tmp_path / "corpus" / f"spk{i % 2}" / "chapter" / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(path).read_bytes())
        nested.append(f"{fileid},{target},{samples}")
    manifest = write_manifest(tmp_path / "m.csv", nested)
    base = ["--checkpoint", checkpoint, "--manifest", manifest, "--layer", "2"]
    assert run_extract(capsys, *base, "--output", tmp_path / "flat")[0] == 0
    code, err = run_extract(capsys, *base, "--output", tmp_path / "tree", "--layout", "tree", "--format", "pt")
    assert code == 0, err
    for i, row in enumerate(nested[1:]):
        fileid = row.split(",")[0]
        tree_file = tmp_path / "tree" / f"spk{i % 2}" / "chapter" / f"{fileid}.pt"
        np.testing.assert_array_equal(torch.load(tree_file).numpy(), np.load(tmp_path / "flat" / f"{fileid}.npy"))


def test_tree_names_of_files_and_archive_members():
    rows = [
        ManifestRow("a", "/data/ls/84/121/a.flac", 10),
        ManifestRow("b", "/data/ls/85/9/b.flac", 10),
        ManifestRow("c", "dev/c.wav", 10, archive="/shards/x.tar", byte_offset=0, byte_size=10),
    ]
    assert tree_names(rows) == {"a": "84/121/a", "b": "85/9/b", "c": "dev/c"}


def test_a_second_extraction_into_one_output_is_refused(setup, tmp_path, capsys):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    # A live holder: this test process (another extraction would hold the lock the same way).
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": None, "started": "now"}
    from spidr_jax.storage.run_lock import _process_start  # the holder's identity as the lock records it

    holder["process_start"] = _process_start(os.getpid())
    (out / "extraction.lock").write_text(json.dumps(holder))
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, out))
    assert code == 1
    assert f"error: {out} is in use by another extraction (pid {os.getpid()}" in err
    assert "use another --output" in err
    assert not (out / "units.jsonl").exists()
    # A lock left by a process that is gone is taken over.
    holder["pid"], holder["process_start"] = 2**22 + 17, "0"
    (out / "extraction.lock").write_text(json.dumps(holder))
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, out))
    assert code == 0, err
    assert not (out / "extraction.lock").exists()  # released at the end


def test_repeated_units_records_are_cut_back_to_one(setup, tmp_path, capsys):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    assert run_extract(capsys, *units_args(checkpoint, manifest, out))[0] == 0
    units_file = out / "units.jsonl"
    text = units_file.read_text()
    units_file.write_text(text + text)  # what two concurrent runs left before the lock
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, out))
    assert code == 0, err
    assert f"{out}: removed {len(LENGTHS)} repeated units records" in err
    assert f"0 written, {len(LENGTHS)} already done" in err
    assert units_file.read_text() == text


def test_short_nonfinite_and_all_failed_files(setup, tmp_path, capsys):
    checkpoint, rows = setup
    short = tmp_path / "short.wav"
    sf.write(short, np.full(300, 0.1, np.float32), 16_000, subtype="PCM_16")
    nan = tmp_path / "nan.wav"
    wave = np.full(8000, 0.1, np.float32)
    wave[10] = np.nan
    sf.write(nan, wave, 16_000, subtype="FLOAT")
    manifest = write_manifest(tmp_path / "m.csv", [*rows, f"short,{short},300", f"nan,{nan},8000"])
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "out"))
    assert code == 0, err
    assert f"{len(LENGTHS)} written, 0 already done, 2 failed" in err
    minimum = receptive_field(TINY.extractor_conv_layer_config)
    assert minimum == 345  # 1 + 9 + 7 * 5 + 3 * 20 + 3 * 80
    assert f"failed: {short}: 300 samples, shorter than the model's minimum of {minimum} (one frame)" in err
    assert f"failed: {nan}: non-finite samples (1 NaN or infinite)" in err
    assert "short" not in {record["fileid"] for record in read_units(tmp_path / "out" / "units.jsonl")}
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "stop", "--on-error", "stop"))
    assert code == 1
    # Every file failing (a wrong mount): exit code 1, and the count said.
    missing = write_manifest(tmp_path / "missing.csv", ["fileid,path,num_samples", *(f"m{i},{tmp_path}/gone{i}.wav,8000"
                                                                                     for i in range(3))])  # fmt: skip
    code, err = run_extract(capsys, *units_args(checkpoint, missing, tmp_path / "none"))
    assert code == 1
    assert "0 written, 0 already done, 3 failed" in err
    assert "no file could be extracted: 3 failed" in err


def test_an_output_inside_a_file_is_named(setup, tmp_path, capsys):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    (tmp_path / "a_file").write_text("x")
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "a_file" / "out"))
    assert code == 1
    named = f"{tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is a file, not a directory"
    assert err.strip().splitlines()[-1] == f"error: {named}; choose another --output"


def test_ctrl_c_is_one_line_and_exit_130(setup, tmp_path, capsys, monkeypatch):
    checkpoint, rows = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    from spidr_jax.extract import run as extraction

    def interrupted(*_args, **_kwargs):
        time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(extraction, "model_outputs", interrupted)
    code, err = run_extract(capsys, *units_args(checkpoint, manifest, tmp_path / "out"))
    assert code == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: what was written in")
    assert "Traceback" not in err


def test_other_rates_and_channels_are_resampled_as_they_are_read(setup, tmp_path, capsys):
    checkpoint, _ = setup
    rng = np.random.default_rng(3)
    stereo = (0.1 * rng.standard_normal((33_075, 2))).astype(np.float32)  # 1.5 s at 22.05 kHz
    sf.write(tmp_path / "odd.wav", stereo, 22_050, subtype="FLOAT")
    mono_16k = read_audio_file(tmp_path / "odd.wav", resample=True)
    sf.write(tmp_path / "same.wav", mono_16k, 16_000, subtype="FLOAT")
    manifest = write_manifest(
        tmp_path / "m.csv",
        [
            "fileid,path,num_samples",
            f"odd,{tmp_path / 'odd.wav'},33075",
            f"same,{tmp_path / 'same.wav'},{len(mono_16k)}",
        ],
    )
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "f",
                            "--layer", "2")  # fmt: skip
    assert code == 0, err
    assert "resampled to 16 kHz mono as they are read: 1 files" in err
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "odd.npy"), np.load(tmp_path / "f" / "same.npy"))
