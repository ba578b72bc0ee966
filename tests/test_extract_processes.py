"""Extraction over several processes launched as on a cluster: the union of their outputs is a 1-process run's.

The processes find each other through JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (as
tests/test_multiprocess.py launches trainers), split the manifest by audio length and write into one directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.extract.processes import split_rows
from tests.extraction_setup import QUICK, hide_launcher, read_units, run_extract, tiny_corpus
from tests.processes import gloo_available, start_processes, wait_all

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [16000, 3000, 9000, 12500, 4000, 7000, 5200]
TIMEOUT = 300  # seconds for one launch (start, load, compile and extract on 2 shared cores)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("extract_processes")
    return tiny_corpus(root, LENGTHS)


def extract_here(capsys, monkeypatch, checkpoint: Path, manifest: Path, out: Path, *extra: str) -> None:
    """A 1-process extraction in this process."""
    hide_launcher(monkeypatch)
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", out, *extra)
    assert code == 0, err


def launch(args: list[str], logs: Path, *, processes: int, devices: int, expect: int = 0) -> list[str]:
    """Run `processes` extraction processes of `devices` CPU devices each; their stderr (all must exit `expect`)."""
    command = [sys.executable, "-m", "spidr_jax.extract", *args, *QUICK]
    started = start_processes(command, logs / "cache", logs, processes=processes, devices=devices, cwd=ROOT)
    codes = wait_all(started, TIMEOUT)
    stderr = [(logs / f"{rank}.err").read_text() for rank in range(processes)]
    for rank, code in enumerate(codes):
        assert code == expect, f"process {rank} exited {code}:\n{stderr[rank][-3000:]}"
    return stderr


def test_the_split_is_deterministic_and_balanced():
    rows = [ManifestRow(f"f{i}", f"f{i}.wav", n) for i, n in enumerate([90, 10, 50, 40, 30, 30, 20, 80, 5, 0])]
    shares = split_rows(rows, 3)
    assert shares == split_rows(list(rows), 3)
    assert sorted(i for share in shares for i in share) == list(range(len(rows)))
    loads = [sum(rows[i].num_samples for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(row.num_samples for row in rows)
    assert loads == [120, 120, 115]  # longest first to the least loaded: 90+30, 80+30+10, 50+40+20+5+0
    assert split_rows(rows, 1) == [list(range(len(rows)))]


@pytest.mark.skipif(not gloo_available(), reason="this jaxlib has no Gloo CPU collectives")
@pytest.mark.slow
def test_two_processes_resume_and_merge_units(setup, tmp_path, capsys, monkeypatch):
    checkpoint, manifest = setup
    extract_here(capsys, monkeypatch, checkpoint, manifest, tmp_path / "single", "--layer", "3", "--units")
    expected = {r["fileid"]: r["units"] for r in read_units(tmp_path / "single" / "units.jsonl")}

    # An interrupted earlier run: process 1 of 2 wrote two records and was cut in the middle of a third, and a
    # shard of a 3-process run is still there.
    out = tmp_path / "multi"
    out.mkdir()
    line = {fileid: json.dumps({"fileid": fileid, "units": units}) + "\n" for fileid, units in expected.items()}
    (out / "units-00001-of-00002.jsonl").write_text(line["u0"] + line["u3"] + line["u5"][:17])
    (out / "units-00002-of-00003.jsonl").write_text(line["u6"])
    args = ["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--output", str(out), "--layer", "3"]
    stderr = launch([*args, "--units"], tmp_path / "logs", processes=2, devices=1)

    records = read_units(out / "units.jsonl")
    assert sorted(r["fileid"] for r in records) == sorted(expected)  # every file exactly once
    assert {r["fileid"]: r["units"] for r in records} == expected
    assert sorted(p.name for p in out.iterdir()) == ["extraction.json", "units.jsonl"]  # shards merged away
    done = [int(text.split(" already done")[0].split()[-1]) for text in stderr]
    assert sum(done) == 3
    assert "units records of the processes' shards merged" in stderr[0]
    assert f"checkpoint: {checkpoint} (converted model, step 0)" in stderr[0]
    assert "checkpoint:" not in stderr[1]  # process 0 speaks for all
    assert stderr[1].count("process 1/2: ") >= 1

    # Other settings are refused by every process, in one line each, without hanging.
    refused = launch([*args[:-1], "2", "--units"], tmp_path / "logs_refused", processes=2, devices=1, expect=1)
    assert "error: " in refused[0]
    assert "(layer: 3 there, 2 now)" in refused[0]
    assert refused[1].strip().splitlines()[-1] == f"error: {out}: process 0 could not prepare the output directory"


@pytest.mark.skipif(not gloo_available(), reason="this jaxlib has no Gloo CPU collectives")
@pytest.mark.slow
def test_two_processes_of_two_devices_write_the_features_of_one(setup, tmp_path, capsys, monkeypatch):
    checkpoint, manifest = setup
    extract_here(capsys, monkeypatch, checkpoint, manifest, tmp_path / "single", "--layer", "2")
    out = tmp_path / "multi"
    args = ["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--output", str(out), "--layer", "2"]
    stderr = launch(args, tmp_path / "logs", processes=2, devices=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["extraction.json", *(f"u{i}.npy" for i in range(len(LENGTHS)))])
    for i in range(len(LENGTHS)):
        ours, alone = np.load(out / f"u{i}.npy"), np.load(tmp_path / "single" / f"u{i}.npy")
        np.testing.assert_allclose(ours, alone, rtol=1e-5, atol=1e-5)
    written = [int(text.split(" written")[0].split()[-1]) for text in stderr]
    assert sorted(written) == [3, 4]  # 16000+7000+4000 samples against 12500+9000+5200+3000
