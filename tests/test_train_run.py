"""The training run end to end (tiny config, small audio): resume equals uninterrupted, SIGTERM saves,
a non-finite loss stops without saving, bad audio is reported, TensorBoard and validation, init from a
converted checkpoint, and the trained workdir loads for extraction and validation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.evaluate.plots import read_scalars
from spidr_jax.pretrained import load_pretrained, read_pretrained
from tests.run_outputs import leaves, logged_steps
from tests.tone_corpus import write_tone_corpus
from tests.train_cli import ROOT, TINY, run, train_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    rows = write_tone_corpus(root)
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    sf.write(root / "rate.wav", np.zeros(16_000, np.float32), 8_000)
    (root / "with_bad.csv").write_text("\n".join([*rows, f"rate,{root / 'rate.wav'},16000"]) + "\n")
    return root


@pytest.fixture(scope="module")
def env(cache):
    return os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}


def losses(workdir: Path) -> dict[int, float]:
    return dict(read_scalars(workdir)["train/loss"])


@pytest.mark.slow
def test_interrupted_runs_continue_exactly(corpus, env, tmp_path):
    straight = run(train_args(corpus, tmp_path / "a", "--config.optimizer.max_steps=12"), env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = run(train_args(corpus, tmp_path / "b", "--config.optimizer.max_steps=7"), env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run(train_args(corpus, tmp_path / "b", "--config.optimizer.max_steps=12"), env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed" in second.stdout
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    _, tree_a = read_pretrained(tmp_path / "a")
    _, tree_b = read_pretrained(tmp_path / "b")
    for a, b in zip(leaves(tree_a), leaves(tree_b), strict=True):
        np.testing.assert_array_equal(a, b)
    # A SIGTERM mid-run saves a checkpoint at the current step; the restart again continues exactly.
    workdir = tmp_path / "c"
    process = subprocess.Popen(
        train_args(corpus, workdir, "--config.optimizer.max_steps=100000"), env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and max(logged_steps(workdir), default=0) < 4:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "saved a checkpoint" in stdout
    stopped = max(logged_steps(workdir))
    assert stopped >= 4
    assert (workdir / "checkpoints" / str(stopped)).is_dir()
    if stopped < 12:
        resumed = run(train_args(corpus, workdir, "--config.optimizer.max_steps=12"), env)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert losses(workdir) == losses(tmp_path / "a")


@pytest.mark.slow
def test_metrics_validation_and_bad_audio(corpus, env, tmp_path):
    workdir = tmp_path / "run"
    # Decoded in one thread (num_workers 0): the default 10 worker processes, started for each of the 3 passes,
    # took most of this test's time on 2 cores.
    validation = (
        f"--config.validation={{'dev': {{'manifest': '{corpus / 'train.csv'}', 'num_static_shapes': 1, "
        "'num_workers': 0}}"
    )
    result = run(
        train_args(corpus, workdir, "--config.optimizer.max_steps=4", "--config.run.save_interval=2", validation,
                   manifest="with_bad.csv"),
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rate.wav" in result.stdout
    # The output is a file, not a terminal: a plain line every run.log_interval (1) steps.
    logged = [line for line in result.stdout.splitlines() if re.match(r"step \d+/\d+: ", line)]
    assert [line.split(":")[0] for line in logged] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    pattern = (
        r"loss [\d.]+, target ppl [\d.]+, pred ppl [\d.]+, lr [\d.e-]+, grad norm [\d.e-]+, \d+ audio s/s, ETA \w+"
    )
    assert all(re.search(pattern, line) for line in logged), logged
    bad = [json.loads(line) for line in (workdir / "bad_audio.txt").read_text().splitlines()]
    assert bad == [{"path": str(corpus / "rate.wav"), "problem": "sample rate is 8000 Hz, expected 16000 Hz"}]
    scalars = read_scalars(workdir)
    for name in ("loss", "lr", "grad_norm", "target_ppl", "pred_ppl", "ema_decay", "batch_size",
                 "audio_seconds_per_second", "step_time", "codebook_usage"):  # fmt: skip
        assert [step for step, _ in scalars[f"train/{name}"]] == [1, 2, 3, 4], name
    assert [step for step, _ in scalars["dev/loss"]] == [0, 2, 4]
    assert json.loads((workdir / "config.json").read_text())["validation"]["dev"]["manifest"].endswith("train.csv")
    # The validate CLI gives the same numbers for the same checkpoint.
    validated = run([sys.executable, "-m", "spidr_jax.validate", "--workdir", str(workdir), "--quiet"], env)
    assert validated.returncode == 0, validated.stderr[-2000:]
    record = json.loads((workdir / "validation.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 4
    np.testing.assert_allclose(record["loss"], dict(scalars["dev/loss"])[4], rtol=1e-5)


@pytest.mark.slow
def test_non_finite_loss_stops_without_saving(env, tmp_path):
    # Finite samples (no decode failure) so large that, not standardized, they overflow the model's float32.
    wav = np.full(16_000, 1e38, np.float32)
    wav[::2] = -1e38
    rows = ["fileid,path,num_samples"]
    for i in range(4):
        sf.write(tmp_path / f"inf{i}.wav", wav, 16_000, subtype="FLOAT")
        rows.append(f"inf{i},{tmp_path / f'inf{i}.wav'},16000")
    (tmp_path / "inf.csv").write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "run"
    overrides = ["--config.optimizer.max_steps=5", "--config.data.normalize=false"]
    result = run(train_args(tmp_path, workdir, *overrides, manifest="inf.csv"), env)
    assert result.returncode == 1
    assert "the loss is not finite at step 1" in result.stderr
    assert "inf0.wav" in result.stderr  # the rows of that step's batch are named
    assert "last good checkpoint (step 0)" in result.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["0"]


@pytest.mark.slow
def test_bad_config_fails_before_compiling(corpus, env, tmp_path):
    result = run(train_args(corpus, tmp_path / "run", "--config.data.max_batch_length=100"), env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.max_batch_length (100) must be >= data.max_sample_size (16000)"
    ]
    missing = run([sys.executable, "-m", "spidr_jax.train", f"--config={TINY}"], env)
    assert missing.returncode != 0
    assert "run.workdir is required" in missing.stderr


@pytest.mark.slow
def test_init_from_converted_checkpoint_and_extract_from_workdir(corpus, env, tmp_path):
    import torch
    from spidr.config import SpidRConfig as TorchSpidRConfig
    from spidr.models import SpidR as TorchSpidR

    from spidr_jax.config.cli import parse_config
    from spidr_jax.convert.conversion import torch_to_orbax

    cfg = parse_config([f"--config={TINY}"])
    fields = cfg.model.to_dict()
    for name in ("ema_timescale", "ema_threshold"):
        fields[name] = getattr(cfg.model, name)
    torch.manual_seed(0)
    reference = TorchSpidR(TorchSpidRConfig(**fields))
    (tmp_path / "release").mkdir()
    torch.save({"model": reference.state_dict()}, tmp_path / "release" / "tiny.pt")
    (tmp_path / "release" / "config.json").write_text(json.dumps({"model": fields}))
    converted = torch_to_orbax(tmp_path / "release" / "tiny.pt", tmp_path / "converted", "spidr")
    workdir = tmp_path / "run"
    result = run(
        train_args(corpus, workdir, "--config.optimizer.max_steps=2", f"--config.run.init_ckpt={converted}"), env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"weights from {converted}" in result.stdout
    trained = load_pretrained(workdir)
    assert int(trained.current_step[...]) == 2
    extracted = run(
        [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(workdir), "--manifest",
         str(corpus / "train.csv"), "--output", str(tmp_path / "units"), "--layer", "4", "--units", "--quiet"],
        env,
    )  # fmt: skip
    assert extracted.returncode == 0, extracted.stderr[-2000:]
    assert len((tmp_path / "units" / "units.jsonl").read_text().splitlines()) == 24


@pytest.mark.slow
def test_folder_of_real_audio_to_falling_loss(env, tmp_path):
    """The issue's path: write_manifest over a folder of real speech, then tiny training; the loss falls."""
    audio = ROOT / "spidr_jax" / "demo" / "corpus" / "audio" / "train"
    made = subprocess.run(
        [sys.executable, "-m", "spidr_jax.data.write_manifest", str(audio), str(tmp_path / "manifest.csv"),
         "--ext", ".flac"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert len((tmp_path / "manifest.csv").read_text().splitlines()) == 1 + 272
    result = run(
        [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}",
         f"--config.data.manifest={tmp_path / 'manifest.csv'}", f"--config.run.workdir={tmp_path / 'run'}",
         "--config.optimizer.max_steps=60", "--config.run.log_interval=10", "--config.data.num_static_shapes=1"],
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    logged = losses(tmp_path / "run")
    assert sorted(logged) == [10, 20, 30, 40, 50, 60]
    assert logged[60] < logged[10] - 0.5


@pytest.mark.slow
def test_high_crop_waste_is_warned_about_naming_the_field(env, tmp_path):
    """Most clips are 4 times longer than the others: one static shape crops most of the audio of the long ones.

    With data.enable_padding the short clips are padded up to the long ones instead (no audio cropped, a quarter
    of the rows padded by 3 s: 18.75% of the batches' samples), and the run trains on padded batches.
    """
    rows = ["fileid,path,num_samples"]
    for i, seconds in enumerate([1, 4, 4, 4] * 2):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, np.random.default_rng(i).standard_normal(seconds * 16_000).astype(np.float32) * 0.1, 16_000)
        rows.append(f"c{i},{path},{seconds * 16_000}")
    (tmp_path / "mixed.csv").write_text("\n".join(rows) + "\n")

    def train(name: str, *options: str) -> list[str]:
        result = run(
            [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}",
             f"--config.data.manifest={tmp_path / 'mixed.csv'}", f"--config.run.workdir={tmp_path / name}",
             "--config.data.num_static_shapes=1", "--config.data.max_sample_size=64000",
             "--config.optimizer.max_steps=2", "--config.run.log_interval=1", *options],
            env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(losses(tmp_path / name)) == [1, 2]
        return result.stdout.splitlines()

    cropped = train("cropped")
    warning = [line for line in cropped if line.startswith("warning:")]
    assert len(warning) == 1
    assert "69% of the audio is cropped away" in warning[0]
    assert "data.num_static_shapes" in warning[0]
    assert "data.enable_padding=true" in warning[0]

    padded = train("padded", "--config.data.enable_padding=true")
    assert not [line for line in padded if line.startswith("warning:")]
    summary = next(line for line in padded if line.startswith("Cropped to bucket lengths"))
    assert "0.00% of the audio; padding: 18.75% of the batches" in summary
