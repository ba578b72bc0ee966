"""Unit-quality evaluation CLI against the reference's metrics, plots, and a short demo run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from spidr.models.metrics import units_quality as reference_units_quality

from spidr_jax import demo
from spidr_jax.data.manifest import read_manifest
from spidr_jax.evaluate.model_units import codebook_units
from spidr_jax.pretrained import load_pretrained
from tests.processes import messages
from tests.reference import tiny_orbax_checkpoint

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_orbax_checkpoint(tmp_path_factory.mktemp("model"))


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spidr_jax.evaluate", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_units_cli_matches_reference_metrics(checkpoint):
    manifest, alignments = demo.manifest_path("dev"), demo.alignments_path("dev")
    result = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                      "--alignments", str(alignments), "--layer", "all", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    reported = {entry["layer"]: entry for entry in map(json.loads, result.stdout.splitlines())}
    assert sorted(reported) == [2, 3, 4]
    units = codebook_units(load_pretrained(checkpoint), read_manifest(manifest))
    phones = demo.read_alignments("dev")
    for layer, entry in reported.items():
        data = {fileid: (phones[fileid], units[layer][fileid].tolist()) for fileid in phones}
        expected = reference_units_quality(data, num_units=64, num_phones=len(demo.phones()))
        for name, value in expected._asdict().items():
            np.testing.assert_allclose(entry[name], value, rtol=1e-5, err_msg=f"layer {layer}: {name}")


def test_kmeans_units_and_errors(checkpoint, tmp_path):
    manifest, alignments = demo.manifest_path("dev"), demo.alignments_path("dev")
    result = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                      "--alignments", str(alignments), "--layer", "1", "--kmeans", "16", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    entry = json.loads(result.stdout)
    assert entry["units"] == "k-means 16"
    assert 0 < entry["pnmi"] < 1
    assert entry["active_codewords"] <= 16
    bad_layer = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                         "--alignments", str(alignments), "--layer", "1")  # fmt: skip
    assert bad_layer.returncode == 1
    assert "units exist for layers 2..4" in bad_layer.stderr
    (tmp_path / "bad.txt").write_text("only_a_fileid\n")
    bad_alignments = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                              "--alignments", str(tmp_path / "bad.txt"), "--layer", "2")  # fmt: skip
    assert bad_alignments.returncode == 1
    assert "bad.txt" in bad_alignments.stderr


def test_plots(checkpoint, tmp_path):
    manifest, alignments = demo.manifest_path("dev"), demo.alignments_path("dev")
    pytest.importorskip("matplotlib")
    out = tmp_path / "codebooks.png"
    assert evaluate("plot", "codebooks", "--checkpoint", str(checkpoint), "--output", str(out)).returncode == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "matrix.png"
    result = evaluate("plot", "phone-units", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                      "--alignments", str(alignments), "--layer", "3", "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.stat().st_size > 1000


def test_demo_run_reports_units_before_and_after(tmp_path, cache):
    env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "spidr_jax.train", "--config=configs/demo.py", f"--config.run.workdir={tmp_path / 'd'}",
         "--config.optimizer.max_steps=6", "--config.run.save_interval=3", "--config.run.log_interval=3"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "units quality on dev (step 0 -> step 6)" in result.stdout
    table = result.stdout.split("units quality on dev")[1].splitlines()[2:5]
    assert [line.split()[0] for line in table] == ["2", "3", "4"]
    assert "n/a" not in "\n".join(table)


def test_units_says_what_it_scored_skipped_and_failed(checkpoint, tmp_path):
    manifest, alignments = demo.manifest_path("dev"), demo.alignments_path("dev")
    rows = manifest.read_text().splitlines()
    # Two aligned files (one a stereo copy, averaged as read), one without alignment, one missing.
    header, first, second, third = rows[0], rows[1], rows[2], rows[3]
    fileid, path = first.split(",")[0], first.split(",")[1]
    wave, rate = sf.read(path, dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([wave, wave], axis=1), rate)
    unaligned = third.replace(third.split(",")[0], "unaligned", 1)
    gone = f"gone,{tmp_path / 'gone.wav'},16000"
    (tmp_path / "m.csv").write_text("\n".join([header, second, unaligned, f"{fileid},{stereo},{len(wave)}", gone]))
    result = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "m.csv"),
                      "--alignments", str(alignments), "--layer", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = messages(result.stderr)
    assert lines[0] == f"checkpoint: {checkpoint} (converted model, step 0)"
    assert lines[1] == (
        f"scored 2 files; 1 skipped (no alignment: unaligned); 1 failed ({tmp_path / 'gone.wav'}: no such file)"
    )
    assert "Warning" not in result.stderr
    # No file scored: exit code 1, said in one line.
    (tmp_path / "none.csv").write_text(f"{header}\ngone,{tmp_path / 'gone.wav'},16000\n")
    none = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "none.csv"),
                    "--alignments", str(alignments), "--layer", "2")  # fmt: skip
    assert none.returncode == 1
    assert none.stderr.strip().splitlines()[-1].startswith("error: no file could be scored (scored 0 files;")


def test_mfcc_baseline_and_the_plots_numbers(checkpoint, tmp_path):
    manifest, alignments = demo.manifest_path("dev"), demo.alignments_path("dev")
    baseline = evaluate("units", "--baseline", "mfcc", "--kmeans", "32", "--manifest", str(manifest),
                        "--alignments", str(alignments), "--json")  # fmt: skip
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    entry = json.loads(baseline.stdout)
    assert entry["units"] == "MFCC k-means 32"
    assert 0.1 < entry["pnmi"] < 1  # MFCC clusters carry phone information, unlike a random model's units
    pytest.importorskip("matplotlib")
    scored = evaluate("units", "--checkpoint", str(checkpoint), "--manifest", str(manifest), "--alignments",
                      str(alignments), "--layer", "all", "--json")  # fmt: skip
    quality = {entry["layer"]: entry for entry in map(json.loads, scored.stdout.splitlines())}
    plotted = evaluate("plot", "codebooks", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
                       "--alignments", str(alignments), "--output", str(tmp_path / "c.png"))  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    for line in plotted.stderr.splitlines():
        if line.startswith("layer "):
            layer, perplexity, active = line.split()[1].rstrip(":"), line.split()[3].rstrip(","), line.split()[5]
            np.testing.assert_allclose(float(perplexity), quality[int(layer)]["codebook_perplexity"], rtol=1e-2)
            assert int(active.split("/")[0]) == quality[int(layer)]["active_codewords"]
    assert sum(line.startswith("layer ") for line in plotted.stderr.splitlines()) == 3
