"""MFCC baseline features: Kaldi's MFCCs with deltas at 50 Hz.

torchaudio (the reference recipe's implementation) is the oracle where it is importable; otherwise the features
are checked against a three-frame case derived here step by step from Kaldi's definitions (plain loops, an explicit
DFT, the mel triangles written out), and against properties that follow from the definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.data.load_batch import FramesOf
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.evaluate.mfcc import MFCC_DIM, compute_deltas, kaldi_mfcc, mfcc_batches, mfcc_features, num_mfcc_frames

EPS32 = float(np.finfo(np.float32).eps)


def noisy_tone(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16_000
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def mfcc_of_one_frame(samples):
    """The 13 MFCCs of one 400-sample frame, each step of Kaldi's recipe written out."""
    frame = [float(s) for s in samples]
    mean = sum(frame) / 400
    frame = [s - mean for s in frame]  # remove the DC offset
    emphasized = [frame[j] - 0.97 * frame[max(j - 1, 0)] for j in range(400)]  # pre-emphasis, first sample repeated
    windowed = [emphasized[j] * (0.5 - 0.5 * math.cos(2 * math.pi * j / 399)) ** 0.85 for j in range(400)]
    # Power spectrum of the frame zero-padded to 512 samples: bins 0..256.
    power = []
    for k in range(257):
        re = sum(windowed[j] * math.cos(2 * math.pi * j * k / 512) for j in range(400))
        im = sum(windowed[j] * math.sin(2 * math.pi * j * k / 512) for j in range(400))
        power.append(re * re + im * im)

    def mel(f):
        return 1127 * math.log(1 + f / 700)

    low, high = mel(20), mel(8000)
    delta = (high - low) / 24  # 23 triangles, evenly spaced on the mel scale between 20 Hz and 8 kHz
    log_energies = []
    for m in range(23):
        left, center, right = low + m * delta, low + (m + 1) * delta, low + (m + 2) * delta
        energy = 0.0
        for k in range(256):  # the Nyquist bin is left out
            x = mel(k * 16_000 / 512)
            if left < x <= center:
                energy += power[k] * (x - left) / (center - left)
            elif center < x < right:
                energy += power[k] * (right - x) / (right - center)
        log_energies.append(math.log(max(energy, EPS32)))
    ceps = []
    for q in range(13):
        scale = math.sqrt(1 / 23) if q == 0 else math.sqrt(2 / 23)
        c = scale * sum(log_energies[m] * math.cos(math.pi * q * (m + 0.5) / 23) for m in range(23))
        ceps.append(c * (1 + 11 * math.sin(math.pi * q / 22)))  # liftering
    return np.array(ceps)


def test_three_frames_derived_step_by_step():
    x = noisy_tone(720)  # 100 Hz frames at samples 0, 160, 320: three of them; 50 Hz frames 0 and 2
    c = [mfcc_of_one_frame(x[160 * i : 160 * i + 400]) for i in range(3)]
    # Deltas over 5 frames with the edge frames repeated: the padded sequence is c0 c0 | c0 c1 c2 | c2 c2.
    d = [
        ((c[1] - c[0]) + 2 * (c[2] - c[0])) / 10,
        ((c[2] - c[0]) + 2 * (c[2] - c[0])) / 10,
        ((c[2] - c[1]) + 2 * (c[2] - c[0])) / 10,
    ]
    dd = [
        ((d[1] - d[0]) + 2 * (d[2] - d[0])) / 10,
        ((d[2] - d[0]) + 2 * (d[2] - d[0])) / 10,
        ((d[2] - d[1]) + 2 * (d[2] - d[0])) / 10,
    ]
    expected = np.stack([np.concatenate([c[i], d[i], dd[i]]) for i in (0, 2)])
    features = mfcc_features(x)
    assert features.dtype == np.float32
    assert features.shape == (2, MFCC_DIM)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_against_torchaudio():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    functional = pytest.importorskip("torchaudio.functional")
    import torch

    for n in (400, 559, 560, 16_000, 48_123):
        x = noisy_tone(n, seed=n)
        mfcc = kaldi.mfcc(torch.from_numpy(x)[None], use_energy=False).T
        deltas = functional.compute_deltas(mfcc)
        expected = torch.cat([mfcc, deltas, functional.compute_deltas(deltas)]).T.numpy()[::2]
        np.testing.assert_allclose(mfcc_features(x), expected, rtol=1e-5, atol=2e-4)


def test_frames_match_the_model():
    frames_of = FramesOf(DinoSRConfig().extractor_conv_layer_config)
    for n in [0, 1, 399, 400, 559, 560, 719, 720, 721, 16_000, 16_319, 16_320, 33_333]:
        assert num_mfcc_frames(n) == int(frames_of(n)), n
        assert mfcc_features(np.zeros(n, np.float32)).shape == (num_mfcc_frames(n), MFCC_DIM)


def test_a_shift_of_320_samples_is_one_frame():
    x = noisy_tone(8_000)
    full, shifted = mfcc_features(x), mfcc_features(x[320:])
    assert len(shifted) == len(full) - 1
    np.testing.assert_allclose(shifted[:, :13], full[1:, :13], rtol=1e-5, atol=1e-5)
    # Deltas reach 2 (delta-deltas 4) frames at 100 Hz: away from the edges they agree too.
    np.testing.assert_allclose(shifted[2:-2], full[3:-2], rtol=1e-4, atol=1e-4)


def test_silence_and_gain():
    silence = mfcc_features(np.full(4_000, 0.25, np.float32))  # a constant is all DC: every energy floors
    np.testing.assert_allclose(silence[:, 0], math.sqrt(23) * math.log(EPS32), rtol=1e-6)
    np.testing.assert_allclose(silence[:, 1:], 0.0, atol=1e-9)  # the DCT of a constant: C0 alone
    x = noisy_tone(6_000)
    louder = mfcc_features(2 * x)
    features = mfcc_features(x)
    # Twice the amplitude is 4x every filter energy: log + ln 4 on all 23, which the DCT puts in C0 alone.
    np.testing.assert_allclose(louder[:, 0] - features[:, 0], math.sqrt(23) * math.log(4), rtol=1e-4)
    np.testing.assert_allclose(louder[:, 1:], features[:, 1:], atol=2e-4)


def test_deltas_of_a_ramp():
    ramp = np.arange(10, dtype=np.float64)[:, None] * [1.0, -3.0]
    deltas = compute_deltas(ramp)
    np.testing.assert_allclose(deltas[2:-2], [[1.0, -3.0]] * 6)
    np.testing.assert_allclose(deltas[0], [(1 + 2 * 2) / 10, -3 * (1 + 2 * 2) / 10])  # c_-1 = c_-2 = c_0


def test_input_checks():
    assert mfcc_features(np.zeros(399, np.float32)).shape == (0, MFCC_DIM)
    assert kaldi_mfcc(np.zeros(0)).shape == (0, 13)
    with pytest.raises(ValueError, match=r"mono waveform of shape \(samples,\)"):
        mfcc_features(np.zeros((800, 2), np.float32))
    long = noisy_tone(16_000 * 45)  # more frames than one chunk (4096): the chunks join seamlessly
    around_the_joint = long[160 * 4090 : 160 * 4099 + 400]  # 100 Hz frames 4090..4099
    np.testing.assert_allclose(kaldi_mfcc(long)[4090:4100], kaldi_mfcc(around_the_joint), rtol=1e-12, atol=1e-9)


def test_batches_for_kmeans(tmp_path):
    import soundfile as sf

    rows = []
    for i, (n, rate) in enumerate([(8_000, 16_000), (300, 16_000), (22_050, 22_050), (16_000, 16_000)]):
        sf.write(tmp_path / f"{i}.wav", noisy_tone(n, seed=i), rate, subtype="FLOAT")
        rows.append(ManifestRow(fileid=str(i), path=str(tmp_path / f"{i}.wav"), num_samples=n))
    source = mfcc_batches(rows, files_per_batch=3)
    batches = list(source(0, 0))
    # The 300-sample file has no frame; the 22.05 kHz second is 16,000 samples once resampled.
    assert [len(b) for b in batches] == [num_mfcc_frames(8_000) + num_mfcc_frames(16_000), num_mfcc_frames(16_000)]
    np.testing.assert_array_equal(batches[1], mfcc_features(noisy_tone(16_000, seed=3)))
    (resumed,) = source(1, 1)  # from batch 1 on: the last one
    np.testing.assert_array_equal(resumed, batches[1])
