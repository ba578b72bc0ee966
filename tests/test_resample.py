"""Audio at other rates and channel counts, resampled to 16 kHz mono with soxr: lengths, content, the scan, training."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import soxr

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, read_audio, read_audio_file, resampled_length, to_model_rate
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.data.scan import SAMPLE_RATE_MISMATCH, scan_manifest
from tests.train_cli import run, train_args

RATES = (8_000, 22_050, 44_100, 48_000)


def write(path, samples, rate, subtype="FLOAT"):
    sf.write(path, samples, rate, subtype=subtype)
    return ManifestRow(fileid=path.stem, path=str(path), num_samples=len(samples))


def peak_frequency(waveform, rate):
    """The frequency of the largest bin of a Hann-windowed spectrum."""
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.fft.rfftfreq(len(waveform), 1 / rate)[np.argmax(spectrum)]


def test_resampled_length_is_what_soxr_outputs():
    rng = np.random.default_rng(0)
    rates = [*RATES, 11_025, 12_000, 24_000, 32_000, 88_200, 96_000, 16_001, 15_999, 7_919]
    lengths = [1, 2, 3, 5, 7, 99, 101, 441, 1_000, 4_411, 22_051, *rng.integers(1, 200_000, 12).tolist()]
    for rate in rates:
        for length in lengths:
            expected = len(soxr.resample(np.zeros(length, np.float32), rate, SAMPLE_RATE, quality="HQ"))
            assert resampled_length(length, rate) == expected, (length, rate)
    # Long files: ten minutes at 44.1 kHz, and a length whose exact 16 kHz length ends in one half.
    for length, rate in ((26_460_001, 44_100), (6_000_003, 96_000)):
        assert resampled_length(length, rate) == len(soxr.resample(np.zeros(length, np.float32), rate, SAMPLE_RATE))
    assert resampled_length(12_345, SAMPLE_RATE) == 12_345
    with pytest.raises(ValueError, match="sample rate must be positive"):
        resampled_length(10, 0)


@pytest.mark.parametrize("rate", RATES)
def test_other_rates_decode_to_16khz_with_the_same_content(tmp_path, rate):
    seconds, frequency = 1.3, 440.0
    n = int(seconds * rate)
    t = np.arange(n) / rate
    row = write(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate)
    with pytest.raises(AudioError, match=rf"tone\.wav: sample rate is {rate} Hz, expected 16000 Hz"):
        read_audio(row)
    waveform = read_audio(row, resample=True)
    assert waveform.dtype == np.float32
    assert waveform.shape == (resampled_length(n, rate),)
    assert peak_frequency(waveform, SAMPLE_RATE) == pytest.approx(frequency, abs=1.0)
    # The same tone drawn at 16 kHz, away from the edges (the filter's transients).
    expected = 0.5 * np.sin(2 * np.pi * frequency * np.arange(len(waveform)) / SAMPLE_RATE)
    np.testing.assert_allclose(waveform[400:-400], expected[400:-400], atol=2e-3)
    np.testing.assert_array_equal(read_audio_file(tmp_path / "tone.wav", resample=True), waveform)


@pytest.mark.parametrize("rate", [SAMPLE_RATE, 48_000])
def test_channels_are_averaged(tmp_path, rate):
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((rate // 2, 2))).astype(np.float32)
    row = write(tmp_path / "stereo.wav", stereo, rate)
    with pytest.raises(AudioError, match=r"channels, expected mono|sample rate is"):
        read_audio(row)
    mono = stereo.mean(axis=1, dtype=np.float32)
    waveform = read_audio(row, resample=True)
    expected = mono if rate == SAMPLE_RATE else soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    np.testing.assert_array_equal(waveform, expected)
    assert waveform.shape == (resampled_length(len(stereo), rate),)


def test_16khz_mono_is_untouched(tmp_path):
    samples = np.random.default_rng(2).integers(-32768, 32767, 16_123).astype(np.int16)
    row = write(tmp_path / "pcm.wav", samples, SAMPLE_RATE, subtype="PCM_16")
    plain = read_audio(row)
    np.testing.assert_array_equal(read_audio(row, resample=True), plain)
    np.testing.assert_array_equal(plain, samples / np.float32(32768))
    assert to_model_rate(plain, SAMPLE_RATE) is plain


def test_too_short_to_resample(tmp_path):
    row = write(tmp_path / "one.wav", np.ones(1, np.float32), 48_000)
    with pytest.raises(AudioError, match=r"one\.wav: no samples once resampled from 48000 Hz"):
        read_audio(row, resample=True)


def test_scan_gives_16khz_lengths_only_when_resampling(tmp_path):
    rows = [
        write(tmp_path / "a.wav", np.zeros(22_050, np.float32), 22_050),  # 16,000 at 16 kHz
        write(tmp_path / "b.wav", np.zeros((4_410, 2), np.float32), 44_100),  # 1,600: too short below
        write(tmp_path / "c.wav", np.zeros(20_000, np.float32), SAMPLE_RATE),
    ]
    refused = scan_manifest(rows, min_sample_size=2_000, progress=False)
    assert [row.path for row in refused.rows] == [rows[2].path]
    assert refused.counts == {SAMPLE_RATE_MISMATCH: 2}
    for decode in (False, True):
        result = scan_manifest(rows, min_sample_size=2_000, resample=True, decode=decode, progress=False)
        assert result.ok
        assert [(row.path, row.num_samples) for row in result.rows] == [(rows[0].path, 16_000), (rows[2].path, 20_000)]
        assert result.num_too_short == 1
    wrong = [ManifestRow(fileid="a", path=rows[0].path, num_samples=16_000)]  # a 16 kHz length in the manifest
    assert scan_manifest(wrong, resample=True, progress=False).problems == [
        (rows[0].path, "header has 22050 samples, manifest says 16000")
    ]
    with pytest.raises(ValueError, match="check_audio"):
        scan_manifest(rows, resample=True, check_audio=False, progress=False)


@pytest.fixture
def corpus_22k(tmp_path):
    rng = np.random.default_rng(3)
    lines = ["fileid,path,num_samples"]
    for i in range(8):
        n = int(rng.integers(22_050, 33_000))
        t = np.arange(n) / 22_050
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n)
        sf.write(tmp_path / f"u{i}.wav", wav.astype(np.float32), 22_050, subtype="PCM_16")
        lines.append(f"u{i},{tmp_path / f'u{i}.wav'},{n}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.slow
def test_training_resamples_only_when_asked(corpus_22k, tmp_path, cache):
    env = os.environ | {"JAX_PLATFORMS": "cpu", "SPIDR_JAX_COMPILATION_CACHE": str(cache)}
    refused = run(train_args(corpus_22k, tmp_path / "refused", "--config.optimizer.max_steps=2"), env)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert "train.csv: no usable rows (8 sample rate" in last
    assert "data.resample=true" in last
    trained = run(train_args(corpus_22k, tmp_path / "run", "--config.optimizer.max_steps=2",
                             "--config.data.resample=true"), env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
