"""Faults of a training run caught before they cost anything, in-process and fast: non-finite audio, changed configs
on resume, validation sets whose alignments do not fit their audio, restore errors that are not damage, and the
minimum length a model can train on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

from spidr_jax.config.loading import config_to_json
from spidr_jax.config.model import ConfigError
from spidr_jax.config.run import Config, DataConfig, MaskingConfig, OptimizerConfig, RunConfig
from spidr_jax.data.audio import AudioError, read_audio_file
from spidr_jax.data.load_batch import BAD_AUDIO
from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.pipeline import TrainingData
from spidr_jax.data.scan import scan_manifest
from spidr_jax.evaluate.alignments import AlignmentMismatchError
from spidr_jax.models import build_model
from spidr_jax.storage.restore_errors import CheckpointUnreadableError, is_damage
from spidr_jax.train.checkpoints import RunCheckpoints, abstract_like
from spidr_jax.train.config_history import HISTORY_FILE, check_restart, current_config, record_start
from spidr_jax.train.state import new_train_state
from spidr_jax.train.units_report import UnitsMonitor
from tests.extraction_setup import TINY

SR = 16_000


def write_rows(root: Path, waves: dict[str, np.ndarray], subtype: str = "FLOAT") -> Path:
    rows = ["fileid,path,num_samples"]
    for name, wave in waves.items():
        sf.write(root / f"{name}.wav", wave, SR, subtype=subtype)
        rows.append(f"{name},{root / f'{name}.wav'},{len(wave)}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def noise_and_one_bad(count: int, name: str, at: int, value: float) -> dict[str, np.ndarray]:
    """`count` files of 1 s of noise (`ok<i>`), and `name`: the first of them with `value` at sample `at`."""
    rng = np.random.default_rng(count)
    waves = {f"ok{i}": (0.1 * rng.standard_normal(SR)).astype(np.float32) for i in range(count)}
    bad = waves["ok0"].copy()
    bad[at] = value
    return waves | {name: bad}


def test_non_finite_samples_are_a_decode_failure_everywhere(tmp_path):
    manifest = write_rows(tmp_path, noise_and_one_bad(6, "bad", 7, np.inf))
    with pytest.raises(AudioError, match=r"bad\.wav: non-finite samples \(1 NaN or infinite\)"):
        read_audio_file(tmp_path / "bad.wav")
    # data.verify_audio decodes every file in the scan: left out with its reason.
    scan = scan_manifest(read_manifest(manifest), decode=True, progress=False)
    assert scan.problems == [(str(tmp_path / "bad.wav"), "non-finite samples (1 NaN or infinite)")]
    # Without it, the row is replaced where it is loaded, and named among the batch's failures.
    cfg = DataConfig(manifest=str(manifest), min_sample_size=0, max_sample_size=SR, max_batch_length=7 * SR,
                     num_workers=0, num_static_shapes=1)  # fmt: skip
    data = TrainingData(cfg, MaskingConfig(), TINY, seed=0, num_data_shards=1, progress=False)
    batch = data.batch(0)
    assert batch[BAD_AUDIO] == [(str(tmp_path / "bad.wav"), "non-finite samples (1 NaN or infinite)")]
    assert np.isfinite(batch["waveforms"]).all()
    assert str(tmp_path / "bad.wav") in data.row_locations(0)  # what a non-finite loss would name


def test_the_minimum_length_named_is_the_models_floor(tmp_path):
    waves = {f"ok{i}": np.full(SR, 0.1 * (i + 1), np.float32) for i in range(3)} | {"short": np.full(300, 0.1)}
    manifest = write_rows(tmp_path, waves)
    cfg = DataConfig(manifest=str(manifest), min_sample_size=100, max_sample_size=SR, max_batch_length=3 * SR,
                     num_workers=0, num_static_shapes=1)  # fmt: skip
    data = TrainingData(cfg, MaskingConfig(), TINY, seed=0, num_data_shards=1, progress=False)
    # TINY's receptive field is 345 samples, its stride 320: one frame needs 640 samples at a multiple of it.
    assert (
        data.min_samples.describe() == "640 samples (one frame of the model at a multiple of its stride (320 samples))"
    )
    assert data.scan.num_too_short == 1


def small_config(workdir: Path, **sections: object) -> Config:
    cfg = Config(run=RunConfig(workdir=str(workdir), model_type="spidr"), data=DataConfig(manifest="train.csv"),
                 model=TINY, optimizer=OptimizerConfig(), masking=MaskingConfig(), validation={})  # fmt: skip
    return dataclasses.replace(cfg, **sections)


def test_a_restart_with_other_data_seed_or_optimizer_says_so_or_is_refused(tmp_path):
    first = small_config(tmp_path)
    record_start(first, tmp_path, 0)
    changed = dataclasses.replace(
        first,
        data=dataclasses.replace(first.data, manifest="other.csv", random_seed=3),
        optimizer=dataclasses.replace(first.optimizer, lr=1e-3),
    )
    said: list[str] = []
    check_restart(changed, tmp_path, said.append)
    assert said == [
        "note: data.manifest changed since the run's last start: 'train.csv' then, 'other.csv' now",
        "note: data.random_seed changed since the run's last start: 0 then, 3 now",
        "note: optimizer.lr changed since the run's last start: 0.0005 then, 0.001 now",
    ]
    strict = dataclasses.replace(changed, run=dataclasses.replace(changed.run, strict_resume=True))
    with pytest.raises(ConfigError, match=r"run.strict_resume=true refuses it"):
        check_restart(strict, tmp_path, said.append)
    # The history keeps every start; config.json stays the first start's; the last start is the current config.
    record_start(changed, tmp_path, 40)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["manifest"] == "train.csv"
    history = [json.loads(line) for line in (tmp_path / HISTORY_FILE).read_text().splitlines()]
    assert [record["step"] for record in history] == [0, 40]
    assert current_config(tmp_path).data.manifest == "other.csv"
    said.clear()
    check_restart(changed, tmp_path, said.append)  # against the last start: nothing changed
    assert said == []
    model_changed = dataclasses.replace(changed, model=dataclasses.replace(TINY, encoder_num_layers=4))
    with pytest.raises(ConfigError, match="holds a run with another model config"):
        check_restart(model_changed, tmp_path, said.append)
    # A workdir of an older version (config.json only) compares against config.json.
    (tmp_path / HISTORY_FILE).unlink()
    check_restart(changed, tmp_path, said.append)
    assert len(said) == 3


def test_alignments_that_do_not_fit_their_audio_are_refused_at_start(tmp_path):
    manifest = write_rows(tmp_path, {"a": np.zeros(SR, np.float32), "b": np.zeros(SR, np.float32)})
    frames = 49  # TINY's frames for 1 s
    (tmp_path / "good.txt").write_text(f"a {' '.join(['x'] * 2 * frames)}\nb {' '.join(['x'] * (2 * frames + 1))}\n")
    (tmp_path / "bad.txt").write_text(f"a {' '.join(['x'] * 2 * frames)}\nb {' '.join(['x'] * frames)}\n")
    sets = {"dev": DataConfig(manifest=str(manifest), alignments_path=str(tmp_path / "good.txt"))}
    UnitsMonitor(sets, TINY)
    sets = {"dev": DataConfig(manifest=str(manifest), alignments_path=str(tmp_path / "bad.txt"))}
    with pytest.raises(AlignmentMismatchError) as info:
        UnitsMonitor(sets, TINY)
    assert str(info.value) == (
        f"validation.dev ({tmp_path / 'bad.txt'}): {tmp_path / 'b.wav'}: 49 alignment frames for 49 model frames "
        "(16000 samples; 98 alignment frames expected, within 2)"
    )
    assert info.value.exit_code == 2


def test_only_evidence_about_the_data_is_damage():
    assert is_damage(ValueError('NOT_FOUND: Error reading "a/.zarray" [os_error_code=2]'))
    assert is_damage(ValueError("OUT_OF_RANGE: Requested byte range [0, 2291) is not valid for value of size 10"))
    assert is_damage(json.JSONDecodeError("Expecting value", "x", 0))
    assert is_damage(KeyError("Item 'meta' was not found in the checkpoint"))
    assert not is_damage(ValueError("Checkpoint path should be absolute. Got runs/demo/checkpoints/0/model"))
    assert not is_damage(ValueError("UNAVAILABLE: Error reading: Connection timed out [os_error_code=110]"))
    assert not is_damage(ValueError("NOT_FOUND: Error reading: Permission denied [os_error_code=13]"))
    assert not is_damage(PermissionError(13, "Permission denied"))
    assert not is_damage(OSError(24, "Too many open files"))
    assert not is_damage(MemoryError())
    caused = ValueError("NOT_FOUND: something")
    caused.__cause__ = TimeoutError("timed out")
    assert not is_damage(caused)


def test_a_restore_error_that_is_not_damage_sets_nothing_aside(tmp_path, monkeypatch):
    import jax

    model = build_model(TINY, seed=0)
    _, state = new_train_state(model, OptimizerConfig(), 0)
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save(state, {"step": 0})
    checkpoints.close()

    def unavailable(*_args, **_kwargs):
        raise ValueError("UNAVAILABLE: Error reading local file: Connection timed out [os_error_code=110]")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", unavailable)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpoints = RunCheckpoints(tmp_path)
    with pytest.raises(CheckpointUnreadableError, match="not a sign of damage: nothing was set aside"):
        checkpoints.restore(abstract_like(state, jax.tree.map(lambda _: sharding, state)))
    checkpoints.close()
    assert not (tmp_path / "damaged_checkpoints").exists()
    assert (tmp_path / "checkpoints" / "0").is_dir()


def test_a_relative_workdir_is_read(tmp_path, monkeypatch):
    from spidr_jax.pretrained import read_workdir

    model = build_model(TINY, seed=0)
    _, state = new_train_state(model, OptimizerConfig(), 0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(config_to_json(small_config(tmp_path / "run")))
    checkpoints = RunCheckpoints(tmp_path / "run")
    checkpoints.save(state, {"step": 0})
    checkpoints.close()
    monkeypatch.chdir(tmp_path)
    cfg, _, step = read_workdir("run", teacher=False)
    assert step == 0
    assert cfg == TINY


@pytest.mark.slow
def test_validate_says_what_it_scored_left_out_and_failed(tmp_path):
    from spidr_jax.train.validate import validate_checkpoint

    manifest = write_rows(tmp_path, noise_and_one_bad(4, "nan", 3, np.nan))
    sf.write(tmp_path / "stereo.wav", np.zeros((SR, 2), np.float32), SR)
    lines = manifest.read_text().splitlines()
    lines += [f"stereo,{tmp_path / 'stereo.wav'},{SR}", f"gone,{tmp_path / 'gone.wav'},{SR}"]
    manifest.write_text("\n".join(lines) + "\n")
    data = DataConfig(manifest=str(manifest), min_sample_size=0, max_sample_size=SR, max_batch_length=2 * SR,
                      num_workers=0, num_static_shapes=1)  # fmt: skip
    cfg = small_config(tmp_path / "run", data=data, optimizer=OptimizerConfig(dtype="float32"))
    (tmp_path / "run").mkdir()
    record_start(cfg, tmp_path / "run", 0)
    _, state = new_train_state(build_model(TINY, seed=0), cfg.optimizer, 0)
    checkpoints = RunCheckpoints(tmp_path / "run")
    checkpoints.save(state, {"step": 0})
    checkpoints.close()
    said: list[str] = []
    [record] = validate_checkpoint(tmp_path / "run", None, [f"dev={manifest}"], progress=False, say=said.append)
    assert said[0] == f"checkpoint: {tmp_path / 'run'} (training workdir, step 0)"
    assert said[1].startswith("warning: dev: left out: 2 of 7 files unusable (")
    assert f"{tmp_path / 'stereo.wav'}: 2 channels, expected mono" in said[1]
    assert f"{tmp_path / 'gone.wav'}: no such file" in said[1]
    assert said[2] == "dev: 5 files scored, 2 left out, 1 failed to decode"
    assert f"{tmp_path / 'nan.wav'}: non-finite samples (1 NaN or infinite)" in said[3]
    assert np.isfinite(record["loss"])  # the NaN file's row was replaced, not scored
