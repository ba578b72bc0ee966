"""Faults a long training run meets, injected into small runs (tiny config), and what the user gets.

Each test reproduces one fault: a kill before the first periodic save, a second run on the same workdir, audio
whose data is corrupt behind a valid header, damaged and silently altered checkpoints, Ctrl-C twice, a killed
trainer's data workers, a full disk, and a restart with a lower `max_steps`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.config.cli import parse_config
from spidr_jax.data.load_batch import BAD_AUDIO
from spidr_jax.data.pipeline import TrainingData
from spidr_jax.evaluate.plots import read_scalars
from spidr_jax.pretrained import read_pretrained, read_workdir
from tests.run_outputs import leaves, logged_steps
from tests.tone_corpus import write_tone_corpus
from tests.train_cli import COMMON, ROOT, TINY, run, train_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 tones, plus a manifest where 2 of them are FLAC files cut in half (their headers still say the length)."""
    root = tmp_path_factory.mktemp("audio")
    rows = write_tone_corpus(root)
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    corrupt = list(rows)
    for i in (3, 7):
        fileid, path, num_samples = rows[1 + i].split(",")
        wav, _ = sf.read(path, dtype="float32")
        flac = root / f"{fileid}.flac"
        sf.write(flac, wav, 16_000, format="FLAC")
        data = flac.read_bytes()
        flac.write_bytes(data[: len(data) // 2])
        corrupt[1 + i] = f"{fileid},{flac},{num_samples}"
    (root / "corrupt.csv").write_text("\n".join(corrupt) + "\n")
    return root


@pytest.fixture(scope="module")
def env(cache: Path) -> dict[str, str]:
    return os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A trainer in the background (its own process group), output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_step(process: subprocess.Popen, workdir: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while max(logged_steps(workdir), default=0) < step:
        assert process.poll() is None, f"the trainer exited with {process.returncode} before step {step}"
        assert time.monotonic() < deadline, f"no step {step} within {timeout} s"
        time.sleep(0.3)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    # From "error:" on: a progress bar cut short by the error can leave its last characters before it on the line.
    return ["error:" + line.split("error:", 1)[1] for line in result.stderr.splitlines() if "error:" in line]


@pytest.mark.slow
def test_kill_before_the_first_periodic_save_resumes_and_a_second_run_is_refused(corpus, env, tmp_path):
    straight = run(train_args(corpus, tmp_path / "straight", "--config.optimizer.max_steps=5"), env)
    assert straight.returncode == 0, straight.stderr[-2000:]

    workdir = tmp_path / "killed"
    # No periodic save before the kill however fast the steps run (100 tiny steps take about 3 s on a fast CPU).
    no_periodic_save = "--config.run.save_interval=1000000"
    first = train_args(corpus, workdir, "--config.optimizer.max_steps=100000", no_periodic_save)
    process = start(first, env, tmp_path / "first.log")
    try:
        wait_for_step(process, workdir, 3)
        # A second training on the same workdir is refused in one line naming the holder.
        second = run(train_args(corpus, workdir, "--config.optimizer.max_steps=5"), env)
        assert second.returncode == 1
        assert error_lines(second) == [line for line in second.stderr.splitlines() if line.strip()]
        assert f"pid {process.pid}" in second.stderr
        assert "in use by another training" in second.stderr
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # kill -9: only the step-0 checkpoint exists
        process.wait()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["0"]
    assert (workdir / "run.lock").exists()  # left by the killed run, stale now

    resumed = run(train_args(corpus, workdir, "--config.optimizer.max_steps=5", no_periodic_save), env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert not (workdir / "run.lock").exists()  # released at the end
    _, expected = read_pretrained(tmp_path / "straight")
    _, got = read_pretrained(workdir)
    for a, b in zip(leaves(expected), leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("padding", [False, True], ids=["cropped", "padded"])
def test_rows_that_fail_to_decode_are_replaced_the_same_way_everywhere(corpus, padding):
    # Padded: rows of 1-1.5 s, none capped, so that the shape pads some rows and crops others.
    padded = ["--config.data.enable_padding=true", "--config.data.max_sample_size=24000"] if padding else []
    cfg = parse_config([f"--config={TINY}", f"--config.data.manifest={corpus / 'corrupt.csv'}", *COMMON, *padded])
    kwargs = {"seed": 0, "num_data_shards": 2, "progress": False}
    whole = TrainingData(cfg.data, cfg.masking, cfg.model, process_index=0, process_count=1, **kwargs)
    assert whole.scan.ok  # the headers are fine: only decoding finds the damage
    again = TrainingData(cfg.data, cfg.masking, cfg.model, process_index=0, process_count=1, **kwargs)
    halves = [
        TrainingData(cfg.data, cfg.masking, cfg.model, process_index=p, process_count=2, **kwargs) for p in (0, 1)
    ]
    failed, padded_rows = [], 0
    for step in range(2 * whole.batches_per_epoch):
        batch = whole.batch(step)
        failed += [location for location, _ in batch.get(BAD_AUDIO, [])]
        # After a restart (a new pipeline) and split between processes: the same replacement rows.
        np.testing.assert_array_equal(batch["waveforms"], again.batch(step)["waveforms"])
        parts = [half.batch(step)["waveforms"] for half in halves]
        np.testing.assert_array_equal(batch["waveforms"], np.concatenate(parts))
        assert np.isfinite(batch["waveforms"]).all()
        if padding:  # a stand-in fills the failed row's length exactly: the masks drawn for that length hold
            lengths = batch["lengths"]
            padded_rows += int((lengths < batch["waveforms"].shape[1]).sum())
            for row, length in zip(batch["waveforms"], lengths, strict=True):
                assert not row[length:].any()
                assert row[length - 100 : length].any()
    assert padded_rows > 0 or not padding
    assert sorted(set(failed)) == [str(corpus / "u3.flac"), str(corpus / "u7.flac")]
    # Each corrupt file once per epoch; padded, a stand-in (drawn among fewer rows: those long enough) can be the
    # other corrupt file.
    assert len(failed) == 4 if not padding else len(failed) >= 4

    # data.verify_audio decodes every file during the scan and leaves the corrupt ones out.
    verify = parse_config([f"--config={TINY}", f"--config.data.manifest={corpus / 'corrupt.csv'}",
                           "--config.data.verify_audio=true", *COMMON])  # fmt: skip
    verified = TrainingData(verify.data, verify.masking, verify.model, process_index=0, process_count=1, **kwargs)
    assert sorted(location for location, _ in verified.scan.problems) == sorted(set(failed))


@pytest.mark.slow
def test_training_replaces_corrupt_rows_records_them_and_stops_when_too_many_fail(corpus, env, tmp_path):
    workdir = tmp_path / "run"
    result = run(
        train_args(corpus, workdir, "--config.optimizer.max_steps=7", "--config.data.max_bad_fraction=0.5",
                   manifest="corrupt.csv"),
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (workdir / "bad_audio.txt").read_text().splitlines()]
    assert {record["path"] for record in records} == {str(corpus / "u3.flac"), str(corpus / "u7.flac")}
    assert all(isinstance(record["step"], int) and record["problem"] for record in records)
    assert "replaced a row that failed to decode" in result.stdout
    assert dict(read_scalars(workdir)["train/bad_audio"])[7] == len(records)
    # With a lower tolerance the run stops in one line once enough rows have failed (10 by then).
    strict = run(
        train_args(corpus, tmp_path / "strict", "--config.optimizer.max_steps=100", "--config.data.max_bad_fraction=0",
                   manifest="corrupt.csv"),
        env,
    )  # fmt: skip
    assert strict.returncode == 1
    assert error_lines(strict) == [
        line for line in strict.stderr.splitlines() if line.startswith(("error", "Traceback"))
    ]
    assert "rows loaded so far failed to decode, more than data.max_bad_fraction (0)" in strict.stderr


def overwrite_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_damaged_checkpoints_are_detected_set_aside_and_an_older_one_used(corpus, env, tmp_path):
    workdir = tmp_path / "run"
    steps = ["--config.run.save_interval=2", "--config.run.keep_latest=-1"]
    first = run(train_args(corpus, workdir, "--config.optimizer.max_steps=4", *steps), env)
    assert first.returncode == 0, first.stderr[-2000:]
    # Step 4: 8 bytes overwritten inside an array's data (restored without error by Orbax, caught by checksum).
    data_files = sorted((workdir / "checkpoints" / "4" / "model").rglob("d/*"), key=lambda p: p.stat().st_size)
    overwrite_middle(data_files[-1])
    # Step 2: a data file of the optimizer state deleted.
    next(iter(sorted((workdir / "checkpoints" / "2" / "training").rglob("d/*")))).unlink()

    # Inference and validation name the damage and use the newest intact checkpoint.
    _, _, step = read_workdir(workdir)
    assert step == 2  # the model item of step 2 is intact; inference does not read the optimizer state
    resumed = run(train_args(corpus, workdir, "--config.optimizer.max_steps=6", *steps), env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning:")]
    assert "checkpoint at step 4 is damaged" in warnings[0]
    assert "differs from what was saved" in warnings[0]
    assert "checkpoint at step 2 is damaged" in warnings[1]
    assert "newest intact checkpoint, step 0" in resumed.stderr
    assert "train state: resumed" in resumed.stdout
    aside = sorted(p.name.split("-")[0] for p in (workdir / "damaged_checkpoints").iterdir())
    assert aside == ["2", "4"]  # kept, out of reach of keep_latest
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [0, 2, 4, 6]
    assert "Traceback" not in resumed.stderr
    # A restart with a max_steps below the checkpoint's step says so, and trains nothing.
    lower = run(train_args(corpus, workdir, "--config.optimizer.max_steps=4", *steps), env)
    assert lower.returncode == 0, lower.stderr[-2000:]
    assert "the checkpoint is at step 6, not below optimizer.max_steps (4): nothing to train" in lower.stdout


@pytest.mark.slow
def test_ctrl_c_twice_stops_at_once_and_workers_exit_with_a_killed_trainer(corpus, env, tmp_path):
    workdir = tmp_path / "interrupted"
    # A long validation after the stop's checkpoint: the second Ctrl-C comes while the first is being honoured.
    rows = (corpus / "train.csv").read_text().splitlines()
    (tmp_path / "dev.csv").write_text("\n".join([rows[0]] + rows[1:] * 8) + "\n")
    validation = f"--config.validation={{'dev': {{'manifest': '{tmp_path / 'dev.csv'}', 'num_static_shapes': 1}}}}"
    args = train_args(corpus, workdir, "--config.optimizer.max_steps=100000", "--config.run.save_interval=100000",
                      validation)  # fmt: skip
    process = start(args, env, tmp_path / "interrupted.log")
    try:
        wait_for_step(process, workdir, 2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 130
    assert "interrupted: stopped at once" in (tmp_path / "interrupted.log").read_text()

    workdir = tmp_path / "workers"
    args = train_args(corpus, workdir, "--config.optimizer.max_steps=100000", "--config.data.num_workers=2")
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(process, workdir, 2)
        workers = children(process.pid)
        assert len(workers) >= 2
    finally:
        process.kill()  # kill -9 of the trainer alone, not of its process group
        process.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def children(pid: int) -> list[int]:
    """Every live descendant of a process."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                frontier.append(int(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def mounted_tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `mount` for the duration (skips where mounting is not allowed)."""
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)]
    made = subprocess.run(command, capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 9 MB filesystem: room for the config, logs and one checkpoint of the tiny model (about 6 MB), not two."""
    yield from mounted_tmpfs(tmp_path / "disk", "size=9m")


@pytest.fixture
def read_only_disk(tmp_path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "read_only", "size=1m,ro")


def test_a_read_only_workdir_fails_in_one_line(corpus, env, read_only_disk):
    result = run(train_args(corpus, read_only_disk / "run", "--config.optimizer.max_steps=2"), env)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: [Errno 30] Read-only file system: '{read_only_disk / 'run'}'"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line(corpus, env, small_disk):
    workdir = small_disk / "run"
    result = run(train_args(corpus, workdir, "--config.optimizer.max_steps=40", "--config.run.save_interval=2"), env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(error_lines(result)) == 1
    assert "No space left on device" in error_lines(result)[0]
    assert "the newest complete checkpoint is step 0" in error_lines(result)[0]
    assert "Traceback" not in result.stderr
    stopped = max(logged_steps(workdir), default=0)
    assert stopped <= 12  # reported within a few steps of the failed save, not at the end of the run
    # What was saved before is intact.
    _, _, step = read_workdir(workdir)
    assert step == 0
