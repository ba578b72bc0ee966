"""Unit-quality evaluation CLI against the reference's metrics, plots, and a short demo run end to end."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spidr.models.metrics import units_quality as reference_units_quality

from spidr_jax import demo
from spidr_jax.convert.conversion import torch_to_orbax
from spidr_jax.data.manifest import read_manifest
from spidr_jax.evaluate.model_units import codebook_units
from spidr_jax.pretrained import load_pretrained
from tests.reference import reference_model, save_release

ROOT = Path(__file__).resolve().parents[1]
# The demo model's shape, random weights.
TINY = runpy.run_path(str(ROOT / "configs" / "tiny.py"))["ARCHITECTURE"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model, cfg = reference_model("spidr", 3, **TINY)
    return torch_to_orbax(save_release(model, cfg, root / "release", "spidr"), root / "orbax", "spidr")


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


def test_demo_run_reports_units_before_and_after(tmp_path):
    env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(tmp_path / "cache")}
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
