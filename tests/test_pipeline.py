"""The Grain training pipeline on real audio files: determinism, resumption, multi-process slices, workers, crops."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from absl import flags

from spidr_jax.config.checks import check_data
from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import DataConfig, MaskingConfig
from spidr_jax.data.audio import normalize, read_audio
from spidr_jax.data.load_batch import RowTable
from spidr_jax.data.manifest import ManifestError, ManifestRow
from spidr_jax.data.pipeline import TrainingData, validation_batches
from spidr_jax.models.extractor import conv_output_lengths

SR = 16_000
MODEL = DinoSRConfig()
MASKING = MaskingConfig()


def write_manifest(path: Path, rows: list[tuple[str, int]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["fileid", "path", "num_samples"])
        writer.writerows((Path(audio).stem, audio, length) for audio, length in rows)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 good files of 0.3-2 s, and a manifest with them plus five bad rows."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        length = int(rng.integers(int(0.3 * SR), 2 * SR))
        # An offset and scale per file, so that normalization visibly matters.
        audio = np.clip(rng.normal(0.05 * (i % 3), 0.1 + 0.02 * i, length), -1, 1)
        path = root / f"good_{i:02d}.wav"
        sf.write(path, audio, SR, subtype="PCM_16")
        rows.append((str(path), length))
    good = write_manifest(root / "good.csv", rows)
    (root / "corrupt.wav").write_bytes(b"not audio at all" * 100)
    sf.write(root / "narrow.wav", np.zeros(8_000), 8_000)
    sf.write(root / "stereo.wav", np.zeros((16_000, 2)), SR)
    sf.write(root / "short.wav", np.zeros(1_000), SR)
    sf.write(root / "liar.wav", np.zeros(10_000), SR)
    bad_rows = [
        (str(root / "corrupt.wav"), 16_000),
        (str(root / "narrow.wav"), 8_000),
        (str(root / "stereo.wav"), 16_000),
        (str(root / "short.wav"), 1_000),
        (str(root / "liar.wav"), 12_000),
    ]
    mixed = write_manifest(root / "mixed.csv", rows[:20] + bad_rows + rows[20:])
    return good, mixed


def data_config(manifest: Path, **changes: object) -> DataConfig:
    cfg = DataConfig(
        manifest=str(manifest),
        min_sample_size=2_000,
        max_sample_size=24_000,
        max_batch_length=48_000,
        num_workers=0,
        num_static_shapes=3,
    )
    return replace(cfg, **changes)


def make(manifest: Path, *, seed: int = 0, shards: int = 2, **kwargs: object) -> TrainingData:
    changes = {key: kwargs.pop(key) for key in list(kwargs) if key in DataConfig.__dataclass_fields__}
    return TrainingData(
        data_config(manifest, **changes),
        kwargs.pop("masking", MASKING),
        MODEL,
        seed=seed,
        num_data_shards=shards,
        process_index=kwargs.pop("process_index", 0),
        process_count=kwargs.pop("process_count", 1),
        progress=False,
    )


def assert_batches_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key], err_msg=key)


def take(data: TrainingData, start: int, count: int, **kwargs: object) -> list[tuple[int, dict[str, np.ndarray]]]:
    with data.iterator(start, **kwargs) as iterator:
        return [next(iterator) for _ in range(count)]


def test_shapes_and_masks(corpus: tuple[Path, Path]) -> None:
    data = make(corpus[0])
    assert len(data.scan.rows) == 40
    assert data.scan.ok
    assert 1 <= len(data.shapes) <= 3
    for global_batch, length in data.shapes:
        assert global_batch % 2 == 0
        assert global_batch == 2 * (48_000 // length)
        assert length % 320 == 0
        assert data.frames[length] == int(conv_output_lengths(length, MODEL.extractor_conv_layer_config))
    assert 0 <= data.buckets.crop_fraction < 0.5
    for step in range(data.batches_per_epoch):
        batch = data.batch(step)
        planned = data.plan.batch(step)
        assert batch.keys() == {"waveforms", "mask"}
        assert batch["waveforms"].shape == (len(planned.rows), planned.length)
        assert batch["waveforms"].dtype == np.float32
        assert batch["mask"].shape == (len(planned.rows), data.frames[planned.length])
        counts = batch["mask"].sum(axis=1)
        assert (counts == counts[0]).all()
        assert counts[0] > 0


def test_batches_are_a_pure_function_of_seed_and_step(corpus: tuple[Path, Path]) -> None:
    first, second, other = make(corpus[0]), make(corpus[0]), make(corpus[0], seed=1)
    steps = [0, 1, first.batches_per_epoch + 2]
    for step in steps:
        assert_batches_equal(first.batch(step), second.batch(step))
    assert any(
        first.batch(step)["waveforms"].shape != other.batch(step)["waveforms"].shape
        or not np.array_equal(first.batch(step)["waveforms"], other.batch(step)["waveforms"])
        for step in steps
    )


def test_resuming_gives_the_batches_of_an_uninterrupted_run(corpus: tuple[Path, Path]) -> None:
    data = make(corpus[0])
    count = data.batches_per_epoch + 3  # across an epoch boundary
    uninterrupted = take(data, 0, count)
    assert [step for step, _ in uninterrupted] == list(range(count))
    start = data.batches_per_epoch - 1
    resumed = take(make(corpus[0]), start, count - start)
    assert [step for step, _ in resumed] == list(range(start, count))
    for (_, expected), (_, batch) in zip(uninterrupted[start:], resumed, strict=True):
        assert_batches_equal(expected, batch)
    assert_batches_equal(data.batch(2), uninterrupted[2][1])
    assert [step for step, _ in take(data, 3, 2, stop_step=5)] == [3, 4]


def test_two_processes_concatenate_to_the_global_batch(corpus: tuple[Path, Path]) -> None:
    masking = replace(MASKING, mask_channel_prob=0.3, mask_channel_length=8)
    whole = make(corpus[0], masking=masking)
    parts = [make(corpus[0], masking=masking, process_index=p, process_count=2) for p in range(2)]
    for step in [0, 3]:
        expected = whole.batch(step)
        assert expected["channel_mask"].shape == (len(whole.plan.batch(step).rows), MODEL.encoder_embed_dim)
        halves = [part.batch(step) for part in parts]
        for key in expected:
            assert halves[0][key].shape[0] == expected[key].shape[0] // 2
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), expected[key], err_msg=key)


@pytest.mark.slow
def test_workers_give_the_same_batches(corpus: tuple[Path, Path]) -> None:
    flags.FLAGS.mark_as_parsed()
    in_process = take(make(corpus[0]), 1, 4)
    with_workers = take(make(corpus[0], num_workers=2), 1, 4)
    for (step, expected), (worker_step, batch) in zip(in_process, with_workers, strict=True):
        assert step == worker_step
        assert_batches_equal(expected, batch)


def find_slice(full: np.ndarray, part: np.ndarray) -> list[int]:
    windows = np.lib.stride_tricks.sliding_window_view(full, len(part))
    return np.flatnonzero((windows == part).all(axis=1)).tolist()


@pytest.mark.parametrize(("do_normalize", "rand_crop"), [(True, True), (False, True), (True, False)])
def test_crops_are_slices_of_the_normalized_utterance(
    corpus: tuple[Path, Path], do_normalize: bool, rand_crop: bool
) -> None:
    data = make(corpus[0], normalize=do_normalize, rand_crop=rand_crop)
    offsets = []
    for step in range(2):
        batch, planned = data.batch(step), data.plan.batch(step)
        for slot, row_id in enumerate(planned.rows):
            full = read_audio(data.scan.rows[row_id])
            if do_normalize:
                full = normalize(full)
            found = find_slice(full, batch["waveforms"][slot])
            assert found, f"row {row_id} is not a slice of its utterance"
            offsets.append(found[0])
    if rand_crop:
        assert max(offsets) > 0
    else:
        assert offsets == [0] * len(offsets)


def test_bad_files_are_reported_and_excluded(corpus: tuple[Path, Path]) -> None:
    data = make(corpus[1])
    bad = {Path(location).name: reason for location, reason in data.scan.problems}
    assert set(bad) == {"corrupt.wav", "narrow.wav", "stereo.wav", "liar.wav"}
    assert "8000 Hz" in bad["narrow.wav"]
    assert data.scan.counts == {"unreadable": 1, "sample rate": 1, "not mono": 1, "length mismatch": 1}
    assert data.scan.num_too_short == 1
    assert len(data.scan.rows) == 40
    assert all(Path(row.path).name.startswith("good_") for row in data.scan.rows)


def test_no_usable_rows_names_the_manifest(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    root = Path(corpus[1]).parent
    manifest = write_manifest(
        tmp_path / "bad.csv", [(str(root / "corrupt.wav"), 16_000), (str(root / "short.wav"), 1_000)]
    )
    with pytest.raises(ManifestError, match=r"bad\.csv: no usable rows \(1 unreadable, 1 shorter than 2000"):
        make(manifest)
    with pytest.raises(ValueError, match=r"data.max_batch_length"):  # checked where a config is loaded
        check_data(data_config(corpus[0], max_batch_length=1_000))
    with pytest.raises(ValueError, match="num_data_shards"):
        make(corpus[0], shards=3, process_count=2)


def test_validation_covers_every_row_once(corpus: tuple[Path, Path]) -> None:
    config = data_config(corpus[0], drop_last=True)
    passes = [
        validation_batches(config, MASKING, MODEL, seed=0, num_data_shards=2, process_index=0, process_count=1),
        validation_batches(config, MASKING, MODEL, seed=0, num_data_shards=2, progress=False),  # processes from JAX
    ]
    data = passes[0]
    assert data.num_batches == data.batches_per_epoch
    batches = take(data, 0, data.num_batches)
    with data.iterator() as iterator:
        assert len(list(iterator)) == data.num_batches
    real_rows = []
    for step, batch in batches:
        planned = data.plan.batch(step)
        assert batch["real"].tolist() == planned.real.tolist()
        assert batch["waveforms"].shape[0] % 2 == 0
        real_rows.extend(planned.rows[planned.real].tolist())
        assert_batches_equal(batch, passes[1].batch(step))  # every pass is the same
    assert sorted(real_rows) == list(range(40))


def test_row_table_round_trips_rows() -> None:
    rows = [
        ManifestRow("a", "/data/a.flac", 16_000),
        ManifestRow("b", "odd/n\udcffme.wav", 5, archive="/tars/1.tar", byte_offset=512, byte_size=100),
        ManifestRow("c", "c.wav", 7, archive="/tars/0.tar", byte_offset=0, byte_size=44),
    ]
    table = RowTable(rows)
    assert len(table) == 3
    for i, row in enumerate(rows):
        assert table[i] == replace(row, fileid=row.path)


def test_padded_batches_keep_whole_rows_and_mask_only_valid_frames(corpus: tuple[Path, Path]) -> None:
    """data.enable_padding: short rows are zero-padded (whole utterance kept), masks stay on their valid frames."""
    flags.FLAGS.mark_as_parsed()
    data = make(corpus[0], enable_padding=True, num_static_shapes=2)
    cropped = make(corpus[0], num_static_shapes=2)
    assert data.buckets.padded_samples > 0
    # Pad or crop, whichever wastes less: less waste than cropping alone.
    waste = data.buckets.crop_fraction + data.buckets.padding_fraction
    assert waste < cropped.buckets.crop_fraction
    frames_of = lambda samples: conv_output_lengths(samples, MODEL.extractor_conv_layer_config)  # noqa: E731
    padded_rows = 0
    for step in range(data.batches_per_epoch):
        batch, planned = data.batch(step), data.plan.batch(step)
        assert batch.keys() == {"waveforms", "mask", "lengths"}
        assert batch["lengths"].dtype == np.int32
        for slot, row_id in enumerate(planned.rows):
            row = data.scan.rows[row_id]
            length = int(batch["lengths"][slot])
            assert length == min(row.num_samples, planned.length)
            waveform = batch["waveforms"][slot]
            assert not waveform[length:].any()
            full = normalize(read_audio(row))
            if length < planned.length:
                padded_rows += 1
                np.testing.assert_array_equal(waveform[:length], full)
            else:
                assert find_slice(full, waveform), f"row {row_id} is not a slice of its utterance"
        valid = frames_of(batch["lengths"])
        beyond = np.arange(batch["mask"].shape[1])[None, :] >= valid[:, None]
        assert not (batch["mask"] & beyond).any()
        counts = batch["mask"].sum(axis=1)
        assert (counts == counts[0]).all()
        assert counts[0] > 0
    assert padded_rows > 0
    # Two processes load the halves of the same batches; workers load the same batches as the thread.
    halves = [make(corpus[0], enable_padding=True, num_static_shapes=2, process_index=p, process_count=2)
              for p in range(2)]  # fmt: skip
    with_workers = take(make(corpus[0], enable_padding=True, num_static_shapes=2, num_workers=2), 0, 3)
    for step, from_workers in with_workers:
        expected = data.batch(step)
        assert_batches_equal(expected, from_workers)
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([h.batch(step)[key] for h in halves]), expected[key])


SHARED_MEMORY_SCRIPT = """
import sys
import jax
from spidr_jax.config.run import DataConfig, MaskingConfig
from spidr_jax.config.model import DinoSRConfig
from spidr_jax.data.pipeline import TrainingData

def main():
    cfg = DataConfig(manifest=sys.argv[1], min_sample_size=2_000, max_sample_size=24_000, max_batch_length=48_000,
                     num_workers=2, num_static_shapes=3)
    data = TrainingData(cfg, MaskingConfig(), DinoSRConfig(), seed=0, num_data_shards=1, progress=False)
    kept = []
    with data.iterator(0) as batches:
        for step, batch in batches:
            kept.append(jax.device_put(batch["waveforms"]))  # JAX arrays alive until the process exits
            if step == 3:
                break

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_no_shared_memory_is_left_behind(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    # Batches from data.num_workers > 0 arrive in shared memory; kept alive by JAX arrays to the end, they were left
    # behind (and Python's resource tracker warned of "leaked shared_memory objects").
    script = tmp_path / "run.py"
    script.write_text(SHARED_MEMORY_SCRIPT)
    env = os.environ | {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script), str(corpus[0])], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leaked shared_memory" not in done.stderr
