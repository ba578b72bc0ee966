"""Unit-quality metrics and alignment reading, checked against the reference implementation."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from spidr_jax.evaluate.alignments import (
    AlignmentFormatError,
    pair_units_with_alignments,
    read_alignments,
    write_alignments,
)
from spidr_jax.evaluate.units_quality import bitrate, count_matrix, phone_unit_probabilities, units_quality

torch = pytest.importorskip("torch")
metrics = pytest.importorskip("spidr.models.metrics")


@contextlib.contextmanager
def default_dtype(dtype):
    """The reference computes its probabilities in torch's default float dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_data(seed, *, num_files=12, num_phones=15, num_units=40, repeat=2, skew=1.5):
    """Files with random phones (Zipf-like frequencies) and units, lengths within the +-2 frame tolerance."""
    rng = np.random.default_rng(seed)
    phone_p = 1.0 / np.arange(1, num_phones + 1) ** skew
    phone_p /= phone_p.sum()
    data = {}
    for f in range(num_files):
        n = int(rng.integers(1, 150))
        units = rng.integers(0, num_units, n).tolist()
        length = max(0, repeat * n + int(rng.integers(-2, 3)))
        phones = [f"ph{i}" for i in rng.choice(num_phones, length, p=phone_p)]
        data[f"spk{f % 3}/utt{f}"] = (phones, units)
    return data


def structured_data(seed, *, num_files=10, num_units=30):
    """Units that mostly follow the phone segments (several units per phone), plus noise: a realistic PNMI."""
    rng = np.random.default_rng(seed)
    inventory = ["SIL", "AH", "T", "N", "S", "IY", "R", "L", "D", "K"]
    weights = np.array([30, 12, 10, 9, 8, 7, 6, 5, 4, 3], dtype=np.float64)
    owners = rng.integers(0, len(inventory), num_units)
    data = {}
    for f in range(num_files):
        phones, units = [], []
        while len(units) < 80 + 10 * f:
            phone = int(rng.choice(len(inventory), p=weights / weights.sum()))
            duration = int(rng.integers(2, 8))
            candidates = np.flatnonzero(owners == phone)
            for _ in range(duration):
                noisy = rng.random() < 0.2 or len(candidates) == 0
                units.append(int(rng.integers(num_units)) if noisy else int(rng.choice(candidates)))
                phones.extend([inventory[phone]] * 2)
        cut = int(rng.integers(-2, 1))  # the aligner may miss the last frame or two
        data[f"utt{f}"] = (phones[: len(phones) + cut] if cut else phones, units)
    return data


def num_distinct_phones(data, repeat=2):
    """The reference needs the exact number of phones that fall within the aligned frames."""
    return len({p for phones, units in data.values() for p in phones[: repeat * len(units)]})


def reference_quality(data, num_units, **kwargs):
    repeat = kwargs.get("frame_step", 20) // 10
    return metrics.units_quality(data, num_units=num_units, num_phones=num_distinct_phones(data, repeat), **kwargs)


def max_relative_difference(ours, ref):
    return max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, ref, strict=True))


CASES = [
    ("random-0", lambda: random_data(0), 40),
    ("random-1", lambda: random_data(1, num_units=64, num_files=30), 64),
    ("random-big-codebook", lambda: random_data(2, num_units=500, num_phones=40, skew=0.7), 512),
    ("structured-0", lambda: structured_data(3), 30),
    ("structured-1", lambda: structured_data(4, num_units=100, num_files=25), 128),
]


@pytest.mark.parametrize(("name", "make", "num_units"), CASES, ids=[c[0] for c in CASES])
def test_units_quality_matches_reference(name, make, num_units):
    data = make()
    ours = units_quality(data, num_units=num_units)
    # Same computation in float64: agreement to rounding.
    with default_dtype(torch.float64):
        ref64 = reference_quality(data, num_units)
    assert ours.active_codewords == ref64.active_codewords
    assert max_relative_difference(ours, ref64) < 1e-10, (name, ours, ref64)
    # The reference's default float32 arithmetic: agreement to float32 accuracy.
    ref32 = reference_quality(data, num_units)
    assert max_relative_difference(ours, ref32) < 2e-6, (name, ours, ref32)
    assert 0 < ours.pnmi <= 1
    assert ours.cluster_purity <= 1
    assert ours.phone_purity <= 1


def test_structured_units_score_higher_than_random():
    structured = units_quality(structured_data(5), num_units=30)
    shuffled = {k: (p, list(np.random.default_rng(0).permutation(u))) for k, (p, u) in structured_data(5).items()}
    assert structured.pnmi > 2 * units_quality(shuffled, num_units=30).pnmi


def test_frame_and_alignment_steps():
    data = random_data(6, repeat=4)
    ours = units_quality(data, num_units=40, frame_step=40)
    ref = reference_quality(data, 40, frame_step=40)
    assert max_relative_difference(ours, ref) < 1e-5
    with pytest.raises(ValueError, match="multiple"):
        units_quality(data, num_units=40, frame_step=25)


def test_length_tolerance_and_error():
    units = [0, 1, 2, 3, 4]
    for diff in (-2, -1, 0, 1, 2):
        data = {"a": (["x"] * (10 + diff), units)}
        counts, order = count_matrix(data, num_units=5, repeat=2)
        assert order == ["x"]
        assert counts.sum() == min(10, 10 + diff)
        metrics.build_count_matrix(data, 5, 1, 2)  # the reference accepts it too
    for diff in (-3, 3):
        data = {"a": (["x"] * (10 + diff), units)}
        with pytest.raises(ValueError, match="frames of difference"):
            count_matrix(data, num_units=5, repeat=2)
        with pytest.raises(ValueError, match="frames of difference"):
            metrics.build_count_matrix(data, 5, 1, 2)
    with pytest.raises(ValueError, match="a: 13 phone frames vs 10"):
        units_quality({"a": (["x"] * 13, units)}, num_units=5)
    assert count_matrix({"a": (["x"] * 13, units)}, num_units=5, repeat=2, max_length_diff=3)[0].sum() == 10


def test_out_of_bounds():
    with pytest.raises(IndexError, match="unit 7"):
        units_quality({"a": (["x"] * 4, [0, 7])}, num_units=5)
    with pytest.raises(IndexError, match="num_phones=1"):
        units_quality({"a": (["x", "x", "y", "y"], [0, 1])}, num_units=5, num_phones=1)


def test_count_matrix_matches_reference():
    data = structured_data(7)
    ours, our_order = count_matrix(data, num_units=30, repeat=2)
    ref, ref_order = metrics.build_count_matrix(data, 30, num_distinct_phones(data), 2)
    assert our_order == ref_order
    np.testing.assert_array_equal(ours, ref.numpy())


def test_phone_order_ties_keep_first_appearance():
    data = {"a": (["b", "b", "a", "a", "c", "c", "c", "c"], [0, 1, 2, 2])}
    assert count_matrix(data, num_units=3, repeat=2)[1] == ["c", "b", "a"]
    assert metrics.build_count_matrix(data, 3, 3, 2)[1] == ["c", "b", "a"]


def assert_same_probabilities(ours, ref):
    """Equal up to the order of units tied on (most probable phone, probability), which the reference leaves open."""
    proba, phones, order = ours
    ref_proba, ref_phones, ref_order = (ref[0].double().numpy(), ref[1], ref[2].numpy())
    assert phones == ref_phones
    assert sorted(order.tolist()) == sorted(ref_order.tolist())
    best = proba.argmax(axis=0)
    keys = [(int(b), round(float(proba[b, i]), 6)) for i, b in enumerate(best)]
    ref_best = ref_proba.argmax(axis=0)
    ref_keys = [(int(b), round(float(ref_proba[b, i]), 6)) for i, b in enumerate(ref_best)]
    assert keys == ref_keys
    columns = dict(zip(order.tolist(), proba.T, strict=True))
    for unit, ref_column in zip(ref_order.tolist(), ref_proba.T, strict=True):
        np.testing.assert_allclose(columns[unit], ref_column, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("only_active", [True, False])
@pytest.mark.parametrize("seed", [8, 9])
def test_phone_unit_probabilities_match_reference(seed, only_active):
    data = structured_data(seed, num_units=40)
    ours = phone_unit_probabilities(data, num_units=48, only_active=only_active)
    ref = metrics.proba_phone_code(data, num_units=48, num_phones=num_distinct_phones(data), only_active=only_active)
    assert_same_probabilities(ours, ref)
    proba, _, order = ours
    num_active = units_quality(data, num_units=48).active_codewords
    assert proba.shape[1] == (num_active if only_active else 48)
    # Every used unit's column is a distribution over phones.
    used = proba.sum(axis=0) > 0
    np.testing.assert_allclose(proba.sum(axis=0)[used], 1.0)
    assert len(set(order.tolist())) == len(order)


def test_phone_unit_probabilities_small_exact():
    # Few units per phone: the reference sorts them stably, so the order must match exactly.
    data = random_data(10, num_units=12, num_phones=6)
    for only_active in (True, False):
        proba, phones, order = phone_unit_probabilities(data, num_units=14, only_active=only_active)
        ref = metrics.proba_phone_code(data, num_units=14, num_phones=6, only_active=only_active)
        assert phones == ref[1]
        np.testing.assert_array_equal(order, ref[2].numpy())
        np.testing.assert_allclose(proba, ref[0].numpy(), rtol=1e-6)


@pytest.mark.parametrize("frame_step", [20, 40])
def test_bitrate_matches_reference(frame_step):
    rng = np.random.default_rng(11)
    sequences = [np.repeat(rng.integers(0, 50, 40), rng.integers(1, 4, 40)).tolist() for _ in range(7)]
    for seqs in (sequences, None):
        ours = bitrate(num_units=50, sequences=seqs, frame_step=frame_step)
        ref = metrics.bitrate(num_units=50, sequences=seqs, frame_step=frame_step)
        assert ours == pytest.approx(ref, rel=1e-12)
    assert bitrate(num_units=256, sequences=[[1, 1, 2, 2]], frame_step=20) == pytest.approx(8 * 2 / 0.08)
    with pytest.raises(ValueError, match="empty"):
        bitrate(num_units=4, sequences=[[]])


def test_numpy_units_accepted():
    data = {k: (p, np.asarray(u, dtype=np.int32)) for k, (p, u) in random_data(12).items()}
    lists = {k: (p, u.tolist()) for k, (p, u) in data.items()}
    assert units_quality(data, num_units=40) == units_quality(lists, num_units=40)


def test_alignments_roundtrip_and_pairing(tmp_path):
    data = structured_data(13)
    alignments = {k: p for k, (p, _) in data.items()}
    path = tmp_path / "alignments.txt"
    write_alignments(alignments, path)
    path.write_text("# phone alignment, 10 ms frames\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    read = read_alignments(path)
    assert read == {k: list(v) for k, v in alignments.items()}
    units = {k: np.asarray(u) for k, (_, u) in data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired = pair_units_with_alignments(read, units)
    assert units_quality(paired, num_units=30) == units_quality(data, num_units=30)
    units.pop("utt0")
    units["extra"] = np.zeros(3, dtype=int)
    with pytest.warns(UserWarning, match="1 aligned files have no units.*1 unit sequences have no alignment"):
        paired = pair_units_with_alignments(read, units)
    assert "utt0" not in paired
    assert "extra" not in paired
    with pytest.raises(ValueError, match="No file id in common"):
        pair_units_with_alignments(read, {"other": [1, 2]})


def test_alignment_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a x y\n# comment\nb\n", encoding="utf-8")
    with pytest.raises(AlignmentFormatError, match=r"bad.txt:3: file id 'b' has no phone labels"):
        read_alignments(path)
    path.write_text("a x y\nb z\na x\n", encoding="utf-8")
    with pytest.raises(AlignmentFormatError, match=r"bad.txt:3: file id 'a' already aligned on line 1"):
        read_alignments(path)
    path.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(AlignmentFormatError, match="no alignments"):
        read_alignments(path)
    with pytest.raises(FileNotFoundError):
        read_alignments(tmp_path / "missing.txt")
