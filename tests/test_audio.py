"""Audio decoding (files and tar members), header reading and utterance normalization."""

from __future__ import annotations

import multiprocessing
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, AudioInfo, audio_info, normalize, read_audio, read_audio_file
from spidr_jax.data.manifest import ManifestRow


def sine(num_samples: int, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    time = np.arange(num_samples) / sample_rate
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * time)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def file_row(path: Path, num_samples: int = 0) -> ManifestRow:
    return ManifestRow(fileid=path.stem, path=str(path), num_samples=num_samples)


def test_int16_decodes_to_value_over_32768(tmp_path: Path) -> None:
    values = np.array([-32768, -12345, -1, 0, 1, 4096, 32767] * 10, dtype=np.int16)
    path = tmp_path / "int16.wav"
    sf.write(path, values, SAMPLE_RATE, subtype="PCM_16")
    waveform = read_audio_file(path)
    assert waveform.dtype == np.float32
    assert waveform.shape == (values.size,)
    np.testing.assert_array_equal(waveform, values.astype(np.float32) / np.float32(32768))


def test_float_wav_round_trips_exactly(tmp_path: Path) -> None:
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 0.3
    path = tmp_path / "float.wav"
    sf.write(path, values, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio_file(path), values)


@pytest.mark.parametrize(("suffix", "subtype"), [(".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_flac_and_ogg_decode(tmp_path: Path, suffix: str, subtype: str) -> None:
    values = np.round(sine(8000) * 32767).astype(np.int16)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, values, SAMPLE_RATE, subtype=subtype)
    waveform = read_audio(file_row(path))
    assert waveform.dtype == np.float32
    assert waveform.ndim == 1
    assert abs(waveform.size - values.size) <= 1024  # lossy codecs may pad a little
    if suffix == ".flac":  # lossless: exactly the int16 samples over 32768
        np.testing.assert_array_equal(waveform, values / np.float32(32768))
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (SAMPLE_RATE, 1)


def test_rejects_wrong_sample_rate(tmp_path: Path) -> None:
    path = tmp_path / "8k.wav"
    sf.write(path, sine(800, 8000), 8000)
    with pytest.raises(AudioError, match=r"8k\.wav: sample rate is 8000 Hz, expected 16000 Hz"):
        read_audio_file(path)
    assert audio_info(path) == AudioInfo(num_samples=800, sample_rate=8000, channels=1)


def test_rejects_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, sine(1600, channels=2), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"stereo\.wav: 2 channels, expected mono"):
        read_audio(file_row(path))


def test_rejects_corrupt_missing_and_empty(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    with pytest.raises(AudioError, match=r"corrupt\.wav: unreadable audio"):
        read_audio_file(corrupt)
    with pytest.raises(AudioError, match=r"corrupt\.wav: unreadable audio"):
        audio_info(corrupt)
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        read_audio_file(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty\.wav: no samples"):
        read_audio_file(empty)


def make_tar(tmp_path: Path, files: dict[str, np.ndarray], suffix: str = ".wav") -> tuple[Path, list[ManifestRow]]:
    """An uncompressed tar of the given waveforms, and the manifest rows locating each member."""
    sources = tmp_path / "sources"
    for name, values in files.items():
        (sources / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(sources / f"{name}{suffix}", values, SAMPLE_RATE)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        for name in files:
            tar.add(sources / f"{name}{suffix}", arcname=f"{name}{suffix}")
    with tarfile.open(archive) as tar:
        rows = [
            ManifestRow(
                fileid=Path(member.name).stem,
                path=member.name,
                num_samples=len(files[member.name.removesuffix(suffix)]),
                archive=str(archive),
                byte_offset=member.offset_data,
                byte_size=member.size,
            )
            for member in tar.getmembers()
        ]
    return archive, rows


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_archive_member_decodes_like_its_file(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    files = {"one": rng.uniform(-0.5, 0.5, 3000), "dir/two": sine(5000), "three": rng.uniform(-0.5, 0.5, 100)}
    _, rows = make_tar(tmp_path, files, suffix)
    for row in rows:
        expected = read_audio_file(tmp_path / "sources" / row.path)
        np.testing.assert_array_equal(read_audio(row), expected)
        assert audio_info(row) == AudioInfo(num_samples=expected.size, sample_rate=SAMPLE_RATE, channels=1)


def test_archive_errors_name_the_member_and_archive(tmp_path: Path) -> None:
    archive, rows = make_tar(tmp_path, {"a": sine(1000)})
    beyond = ManifestRow("a", "a.wav", 1000, str(archive), archive.stat().st_size - 10, 100)
    with pytest.raises(AudioError, match=r"a\.wav \(in .*data\.tar\): bytes .* beyond the archive's end"):
        read_audio(beyond)
    garbage = ManifestRow("a", "a.wav", 1000, str(archive), 0, 512)  # the tar header, not audio
    with pytest.raises(AudioError, match=r"a\.wav \(in .*data\.tar\): unreadable audio"):
        read_audio(garbage)
    missing = ManifestRow("a", "a.wav", 1000, str(tmp_path / "nope.tar"), rows[0].byte_offset, rows[0].byte_size)
    with pytest.raises(AudioError, match=r"nope\.tar\): cannot open archive"):
        read_audio(missing)


def _decode_sum(row: ManifestRow) -> float:
    return float(read_audio(row).sum())


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_archive_reads_in_worker_processes(tmp_path: Path, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    _, rows = make_tar(tmp_path, {"a": sine(2000), "b": sine(3000) * 0.5})
    expected = [_decode_sum(row) for row in rows]  # maps the archive in this process first
    with multiprocessing.get_context(method).Pool(2) as pool:
        assert pool.map(_decode_sum, rows * 3) == expected * 3


def test_normalize_matches_torch_layer_norm() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for waveform in [
        rng.standard_normal(16000).astype(np.float32) * 0.1 + 0.05,
        (sine(4000) * 1e-3).astype(np.float32),  # quiet: eps matters
        np.zeros(100, dtype=np.float32),  # silent: eps keeps it finite
    ]:
        tensor = torch.from_numpy(waveform)[None]
        expected = torch.nn.functional.layer_norm(tensor, tensor.shape).squeeze(0).numpy()
        result = normalize(waveform)
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, expected, rtol=1e-6, atol=2e-6)


def test_normalize_statistics_and_shape() -> None:
    waveform = np.random.default_rng(3).uniform(-1, 1, (2, 500)).astype(np.float32) + 3.0
    result = normalize(waveform)
    assert result.shape == waveform.shape
    assert abs(float(result.mean())) < 1e-6
    assert abs(float(result.std()) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="empty"):
        normalize(np.zeros(0, dtype=np.float32))
