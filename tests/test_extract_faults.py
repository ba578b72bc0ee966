"""Extraction CLI faults: empty rows, cut units lines, duplicate fileids, changed settings, full or read-only disks."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spidr_jax.config import Config, RunConfig
from spidr_jax.config.loading import config_to_json
from spidr_jax.extract.units_file import UnitsWriter
from spidr_jax.models import build_model
from spidr_jax.storage.atomic import WriteError
from spidr_jax.train.checkpoints import RunCheckpoints
from spidr_jax.train.state import new_train_state
from tests.extraction_setup import (
    TINY,
    hide_launcher,
    read_units,
    run_extract,
    tiny_checkpoint,
    write_audio,
    write_manifest,
)
from tests.faults import modes, read_only_directory, umask, with_file_size_limit

LENGTHS = [4000, 9000, 6400, 12000]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[str], Path]:
    root = tmp_path_factory.mktemp("extract_faults")
    return tiny_checkpoint(root / "model"), write_audio(root / "wav", LENGTHS), root


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    hide_launcher(monkeypatch)


def test_empty_row_is_a_file_failure(setup, tmp_path, capsys):
    checkpoint, rows, root = setup
    empty = root / "wav" / "u0.wav"
    manifest = write_manifest(tmp_path / "m.csv", [*rows, f"empty,{empty},0"])
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "a",
                            "--layer", "2")  # fmt: skip
    assert code == 0, err
    assert "4 written, 0 already done, 1 failed" in err
    assert f"  failed: {empty}: num_samples is 0 in the manifest" in err
    assert sorted(p.name for p in (tmp_path / "a").glob("*.npy")) == [f"u{i}.npy" for i in range(4)]
    (tmp_path / "a" / ".u0.npy.k3x_9q.tmp").write_bytes(b"left by a killed run")
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "a",
                            "--layer", "2")  # fmt: skip
    assert "0 written, 4 already done, 1 failed" in err
    assert not (tmp_path / "a" / ".u0.npy.k3x_9q.tmp").exists()
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "b",
                            "--layer", "2", "--on-error", "stop")  # fmt: skip
    assert code == 1
    assert f"failed: {empty}: num_samples is 0" in err


def test_a_last_record_without_its_newline_is_redone(setup, tmp_path, capsys):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    args = ["--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "u", "--layer", "3", "--units"]
    assert run_extract(capsys, *args)[0] == 0
    units = tmp_path / "u" / "units.jsonl"
    first = read_units(units)
    units.write_text(units.read_text().removesuffix("\n"))  # the last record is valid JSON, its newline missing
    code, err = run_extract(capsys, *args)
    assert code == 0, err
    assert "1 written, 3 already done" in err
    again = read_units(units)
    assert sorted(r["fileid"] for r in again) == sorted(r["fileid"] for r in first)
    assert {r["fileid"]: r["units"] for r in again} == {r["fileid"]: r["units"] for r in first}


def test_duplicate_fileids_are_refused_before_any_work(setup, tmp_path, capsys):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", [*rows, rows[2]])
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "o",
                            "--layer", "2")  # fmt: skip
    assert code == 1
    path = rows[2].split(",")[1]
    assert err.strip().splitlines() == [
        f"error: {manifest}: fileid 'u1' is on 2 rows: data rows 2 ({path}), 5 ({path})"
    ]
    assert not (tmp_path / "o").exists()


def test_settings_are_recorded_and_a_rerun_with_others_is_refused(setup, tmp_path, capsys):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    base = ["--checkpoint", checkpoint, "--manifest", manifest, "--output", out]
    code, err = run_extract(capsys, *base, "--layer", "2")
    assert code == 0, err
    assert f"checkpoint: {checkpoint} (converted model, step 0)" in err
    recorded = json.loads((out / "extraction.json").read_text())
    assert recorded["layer"] == 2
    assert recorded["output"] == "features"
    assert recorded["checkpoint"] == str(checkpoint)
    assert recorded["checkpoint_step"] == 0
    code, err = run_extract(capsys, *base, "--layer", "3", "--after-residual")
    assert code == 1
    [line] = err.strip().splitlines()[1:]  # after the checkpoint line
    assert line.startswith(f"error: {out / 'extraction.json'}: {out} was extracted with other settings (")
    assert "layer: 2 there, 3 now; after_residual: False there, True now" in line
    assert "--overwrite" in line
    before = np.load(out / "u1.npy")
    code, err = run_extract(capsys, *base, "--layer", "3", "--after-residual", "--overwrite")
    assert code == 0, err
    assert "deleted 5 files of an earlier extraction" in err  # 4 features and the settings
    assert "4 written, 0 already done" in err
    assert json.loads((out / "extraction.json").read_text())["layer"] == 3
    assert not np.array_equal(np.load(out / "u1.npy"), before)


def test_a_training_workdir_names_its_step(setup, tmp_path, capsys):
    _, rows, _ = setup
    workdir = tmp_path / "run"
    cfg = Config(run=RunConfig(model_type="spidr"), model=TINY)
    workdir.mkdir()
    (workdir / "config.json").write_text(config_to_json(cfg))
    _, state = new_train_state(build_model(TINY), cfg.optimizer, seed=0)
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(state.replace(step=np.int32(7)), {})
    checkpoints.close()
    manifest = write_manifest(tmp_path / "m.csv", rows)  # the shapes and layer compiled for the tests above
    code, err = run_extract(capsys, "--checkpoint", workdir, "--manifest", manifest, "--output", tmp_path / "o",
                            "--layer", "3", "--units")  # fmt: skip
    assert code == 0, err
    assert f"checkpoint: {workdir} (training workdir, step 7)" in err
    assert json.loads((tmp_path / "o" / "extraction.json").read_text())["checkpoint_step"] == 7


def test_outputs_follow_the_umask(setup, tmp_path, capsys):
    checkpoint, rows, _ = setup
    nested = [rows[0], rows[1].replace("u0,", "speaker/u0,", 1), *rows[2:]]  # a fileid with a folder
    manifest = write_manifest(tmp_path / "m.csv", nested)
    with umask(0o027):
        for out, extra in (("feats", []), ("units", ["--units"])):
            code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output",
                                    tmp_path / out, "--layer", "3" if extra else "2", *extra)  # fmt: skip
            assert code == 0, err
    for out in ("feats", "units"):
        found = modes(tmp_path / out)
        assert all(m == (0o750 if (tmp_path / out / p).is_dir() else 0o640) for p, m in found.items()), found
    assert (tmp_path / "feats" / "speaker" / "u0.npy").is_file()


def test_read_only_output_directory(setup, tmp_path, capsys):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with read_only_directory(tmp_path / "ro") as ro:
        code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", ro / "out",
                                "--layer", "2")  # fmt: skip
        assert code == 1
        [line] = [line for line in err.strip().splitlines() if not line.startswith("checkpoint:")]
        assert line.startswith(f"error: cannot write {ro / 'out'}: ")
        assert list(ro.iterdir()) == []


@pytest.mark.slow
def test_disk_full_names_the_file_and_leaves_no_partial_file(setup, tmp_path):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(checkpoint), "--manifest",
               str(manifest), "--output", str(out), "--layer", "2", "--quiet"]  # fmt: skip
    result = subprocess.run(with_file_size_limit(2_000, command), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.strip().splitlines() if not line.startswith("checkpoint:")]
    assert line.startswith(f"error: cannot write {out}/u")
    assert line.endswith(".npy: File too large")
    assert sorted(p.name for p in out.iterdir()) == ["extraction.json"]  # no .npy, no temporary file


def test_a_failed_units_write_keeps_only_complete_records(tmp_path):
    writer = UnitsWriter(tmp_path)
    writer.write("a", np.array([1, 2]))
    writer.flush()

    class FullDisk:
        """Takes part of the line, then the disk is full."""

        def __init__(self, file):
            self.file, self.closed = file, False

        def write(self, text):
            self.file.write(text[:5])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.file.close()

    writer.file = FullDisk(writer.file)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'units.jsonl'}: No space left on device"):
        writer.write("b", np.array([3]))
    assert (tmp_path / "units.jsonl").read_text() == '{"fileid": "a", "units": [1, 2]}\n'


def test_a_relative_checkpoint_path_and_an_output_that_is_a_file(setup, tmp_path, capsys, monkeypatch):
    checkpoint, rows, _ = setup
    manifest = write_manifest(tmp_path / "m.csv", rows)
    (tmp_path / "taken").write_text("")
    monkeypatch.chdir(checkpoint.parent)
    code, err = run_extract(capsys, "--checkpoint", checkpoint.name, "--manifest", manifest, "--output",
                            tmp_path / "taken", "--layer", "2")  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        f"checkpoint: {checkpoint} (converted model, step 0)",
        f"error: {tmp_path / 'taken'}: exists and is not a directory; choose another --output",
    ]
