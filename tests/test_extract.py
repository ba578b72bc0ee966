"""Extraction CLI: features and units of a layer equal the reference's, resumable output, bad audio reported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from spidr_jax.convert.conversion import torch_to_orbax
from spidr_jax.data.padded_batches import padding_fraction, plan_padded_batches
from tests.reference import SMALL, reference_model, save_release, scale_error

LENGTHS = [5200, 12000, 16000, 7100, 23000]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    model, cfg = reference_model("spidr", 5, **SMALL)
    checkpoint = torch_to_orbax(save_release(model, cfg, root / "release", "spidr"), root / "orbax", "spidr")
    rng = np.random.default_rng(0)
    rows, audio = ["fileid,path,num_samples"], {}
    (root / "wav").mkdir()
    for i, n in enumerate(LENGTHS):
        path = root / "wav" / f"utt{i}.flac"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="PCM_16")
        audio[f"utt{i}"] = sf.read(path, dtype="float32")[0]
        rows.append(f"utt{i},{path},{n}")
    # A file that cannot be used (8 kHz files are resampled as they are read): a float WAV with a NaN sample.
    broken = np.zeros(4000, np.float32)
    broken[100] = np.nan
    sf.write(root / "wav" / "broken.wav", broken, 16000, subtype="FLOAT")
    rows.append(f"broken,{root / 'wav' / 'broken.wav'},4000")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root, model, checkpoint, audio


def extract(root, checkpoint, output, *args):
    cmd = [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(checkpoint), "--manifest",
           str(root / "manifest.csv"), "--output", str(output), "--quiet", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def reference_layers(model, waveform):
    wav = torch.from_numpy(waveform)[None]
    with torch.no_grad():
        wav = F.layer_norm(wav, wav.shape)
        return model.get_intermediate_outputs(wav), model.get_codebooks(wav, onehot=True)


@pytest.mark.slow
def test_features_match_reference_and_resume(setup, tmp_path):
    root, model, checkpoint, audio = setup
    result = extract(root, checkpoint, tmp_path / "feats", "--layer", "3")
    assert result.returncode == 0, result.stderr
    assert "5 written" in result.stderr
    assert "1 failed" in result.stderr
    assert "broken.wav: non-finite samples (1 NaN or infinite)" in result.stderr
    for fileid, waveform in audio.items():
        ours = np.load(tmp_path / "feats" / f"{fileid}.npy")
        assert ours.dtype == np.float32
        ref = reference_layers(model, waveform)[0][2][0].numpy()
        assert scale_error(ref, ours) <= 1e-4
    again = extract(root, checkpoint, tmp_path / "feats", "--layer", "3", "--on-error", "stop")
    assert "5 already done" in again.stderr
    assert again.returncode == 1  # the NaN file still fails, and --on-error stop makes it an error


@pytest.mark.slow
def test_units_match_reference_and_survive_a_cut_line(setup, tmp_path):
    root, model, checkpoint, audio = setup
    result = extract(root, checkpoint, tmp_path / "units", "--layer", "4", "--units")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "units" / "units.jsonl").read_text().splitlines()
    units = {entry["fileid"]: entry["units"] for entry in map(json.loads, lines)}
    assert set(units) == set(audio)
    for fileid, waveform in audio.items():
        ref = reference_layers(model, waveform)[1][3].numpy().argmax(-1)
        assert np.mean(np.array(units[fileid]) == ref) > 0.99
    # Simulate an interruption in the middle of the last line: it is dropped and redone.
    text = (tmp_path / "units" / "units.jsonl").read_text()
    (tmp_path / "units" / "units.jsonl").write_text(text[: text.rindex("{") + 20])
    extract(root, checkpoint, tmp_path / "units", "--layer", "4", "--units")
    entries = [json.loads(line) for line in (tmp_path / "units" / "units.jsonl").read_text().splitlines()]
    assert sorted(e["fileid"] for e in entries) == sorted(audio)


def test_layer_without_codebooks_is_refused(setup, tmp_path):
    root, _, checkpoint, _ = setup
    result = extract(root, checkpoint, tmp_path / "u", "--layer", "1", "--units")
    assert result.returncode == 1
    assert "units exist for layers 2..4" in result.stderr


def test_fairseq_manifest(setup, tmp_path):
    root, model, checkpoint, audio = setup
    tsv = tmp_path / "m.tsv"
    tsv.write_text(f"{root / 'wav'}\nutt1.flac\t{LENGTHS[1]}\n")
    cmd = [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(checkpoint), "--manifest", str(tsv),
           "--output", str(tmp_path / "out"), "--layer", "2", "--quiet"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    ours = np.load(tmp_path / "out" / "utt1.flac.npy")
    assert scale_error(reference_layers(model, audio["utt1"])[0][1][0].numpy(), ours) <= 1e-4


def test_padded_batch_plan_covers_everything_with_few_shapes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16_000, 16_000 * 20, size=2000).tolist()
    batches = plan_padded_batches(lengths, max_batch_samples=16_000 * 200, max_batch_size=64, batch_multiple=8)
    covered = sorted(i for b in batches for i in b.indices)
    assert covered == list(range(len(lengths)))
    assert all(b.batch_size % 8 == 0 and len(b.indices) <= b.batch_size for b in batches)
    assert all(max(lengths[i] for i in b.indices) <= b.length for b in batches)
    assert len({b.length for b in batches}) <= 8  # the default max_shapes
    assert padding_fraction(lengths, batches) < 0.15  # 8 shapes over lengths uniform in 1-20 s
    few = plan_padded_batches([960, 5120, 8960], max_batch_samples=10**6, max_batch_size=64, max_shapes=2)
    assert [(b.length, b.batch_size) for b in few] == [(8960, 2), (960, 1)]  # 3840 samples of padding, the least
