"""Span masks: exact properties, and statistics compared with the reference's masks over many draws.

The two sides use different random generators (numpy vs torch), so masks are compared through their distributions:
masked frames per row (mean and spread), span runs (count and length histogram) and the fraction of draws that mask
each frame position. Tolerances were set well above the differences between two independent reference runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import spidr
import torch
from spidr.config import MaskingConfig as TorchMaskingConfig

from spidr_jax.config.checks import check_masking
from spidr_jax.config.run import MaskingConfig
from spidr_jax.data.masks import MASK_TYPES, MaskGenerator, compute_span_mask, span_lengths

# The reference masks module, loaded from its file: importing `spidr.data` needs optional audio packages.
_REF_FILE = Path(spidr.__file__).parent / "data" / "masks.py"
_spec = importlib.util.spec_from_file_location("spidr_reference_masks", _REF_FILE)
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)

DRAWS = 250
PADDED = (180, 172, 150, 131, 110, 90, 64, 40)


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int = 8
    frames: int = 160
    mask_prob: float = 0.65
    mask_length: int = 10
    mask_type: str = "static"
    mask_other: float = 0.0
    min_masks: int = 2
    min_space: int = 1
    no_overlap: bool = False
    valid: tuple[int, ...] | None = None

    def kwargs(self) -> dict:
        return {
            "mask_prob": self.mask_prob,
            "mask_length": self.mask_length,
            "mask_type": self.mask_type,
            "mask_other": self.mask_other,
            "min_masks": self.min_masks,
            "min_space": self.min_space,
            "no_overlap": self.no_overlap,
        }


CASES = {
    "static": Case(frames=165),  # 10.7 expected spans: probabilistic rounding
    "static_dense": Case(frames=200, mask_prob=0.8),  # the default masking
    "static_padded": Case(frames=180, mask_prob=0.8, valid=PADDED),
    "uniform": Case(mask_type="uniform", mask_other=2, mask_length=6),
    "normal": Case(mask_type="normal", mask_other=3, mask_length=8),
    "poisson": Case(mask_type="poisson"),
    "poisson_all_zero_fixup": Case(mask_type="poisson", mask_prob=0.02, mask_length=3, frames=100),
    "no_overlap": Case(no_overlap=True, mask_prob=0.5),
    "no_overlap_space3_padded": Case(no_overlap=True, mask_prob=0.5, min_space=3, frames=180, valid=PADDED),
    "uniform_no_overlap": Case(no_overlap=True, mask_type="uniform", mask_other=3, mask_length=6, mask_prob=0.4),
    "normal_no_overlap": Case(no_overlap=True, mask_type="normal", mask_other=2, mask_length=8, mask_prob=0.4),
    "poisson_no_overlap": Case(no_overlap=True, mask_type="poisson", mask_length=8, mask_prob=0.4, min_space=2),
    "uniform_no_overlap_padded": Case(
        no_overlap=True, mask_type="uniform", mask_other=1, mask_length=5, mask_prob=0.4, frames=180, valid=PADDED
    ),
    "min_masks_dominate": Case(mask_prob=0.05),
    "short_crowded": Case(frames=12, mask_prob=0.8),
    "short_no_overlap": Case(frames=25, mask_prob=0.8, no_overlap=True),
    "tiny": Case(frames=3, mask_prob=0.8),
    "no_overlap_tight": Case(frames=40, mask_prob=0.6, mask_length=5, min_space=2, no_overlap=True),
    "channels": Case(frames=64, mask_prob=0.2, mask_length=8, min_masks=0),  # 1 or 2 spans, no minimum
    "length_one": Case(frames=100, mask_prob=0.3, mask_length=1),
}
# 10-frame static spans over half of the frames, at least 2 per row, possibly overlapping.
STATIC_SPANS = {
    "mask_prob": 0.5, "mask_length": 10, "mask_type": "static", "mask_other": 0.0,
    "min_masks": 2, "min_space": 1, "no_overlap": False,
}  # fmt: skip


def padding_mask(valid: tuple[int, ...] | np.ndarray, frames: int) -> torch.Tensor:
    """The reference's padding mask (True at padded frames) for a valid-length prefix per row."""
    return torch.arange(frames)[None] >= torch.as_tensor(np.asarray(valid))[:, None]


def dense(indices: torch.Tensor, frames: int) -> np.ndarray:
    """(batch, count) masked positions as a (batch, frames) boolean mask."""
    mask = np.zeros((indices.shape[0], frames), dtype=bool)
    np.put_along_axis(mask, indices.numpy().astype(np.int64), values=True, axis=1)
    return mask


def reference_masks(case: Case, draws: int = DRAWS, seed: int = 1234) -> np.ndarray:
    """(draws, batch, frames) reference masks."""
    pad = None if case.valid is None else padding_mask(case.valid, case.frames)
    generator = torch.Generator().manual_seed(seed)
    out = np.zeros((draws, case.batch, case.frames), dtype=bool)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # "poisson" lengths draw from the global generator
        for d in range(draws):
            kwargs = case.kwargs()
            indices = REF.compute_mask_indices(
                (case.batch, case.frames),
                pad,
                kwargs.pop("mask_prob"),
                kwargs.pop("mask_length"),
                kwargs.pop("mask_type"),
                kwargs.pop("mask_other"),
                kwargs.pop("min_masks"),
                kwargs.pop("min_space"),
                generator=generator,
                **kwargs,
            )
            out[d] = dense(indices, case.frames)
    return out


def our_masks(case: Case, draws: int = DRAWS, seed: int = 4321) -> np.ndarray:
    """(draws, batch, frames) masks from compute_span_mask."""
    rng = np.random.default_rng(seed)
    valid = None if case.valid is None else np.asarray(case.valid)
    return np.stack(
        [compute_span_mask(rng, case.batch, case.frames, valid_frames=valid, **case.kwargs()) for _ in range(draws)]
    )


def runs(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths of all runs of masked frames, and the number of runs in each row."""
    rows = masks.reshape(-1, masks.shape[-1]).astype(np.int8)
    edges = np.diff(np.pad(rows, ((0, 0), (1, 1))), axis=1)
    start_rows, start_cols = np.nonzero(edges == 1)
    _, end_cols = np.nonzero(edges == -1)
    return end_cols - start_cols, np.bincount(start_rows, minlength=rows.shape[0])


def assert_same_distribution(ours: np.ndarray, ref: np.ndarray, *, padded: bool) -> None:
    """Masked-frame count, span runs and positional coverage agree within statistical tolerances."""
    draws = ours.shape[0]
    # Every row of a draw has the same count, so one count per draw.
    ours_count, ref_count = ours[:, 0].sum(-1).astype(float), ref[:, 0].sum(-1).astype(float)
    stderr = np.sqrt((ours_count.var() + ref_count.var()) / draws)
    assert abs(ours_count.mean() - ref_count.mean()) <= 4.5 * stderr + 1e-9, (ours_count.mean(), ref_count.mean())
    spread = max(ours_count.std(), ref_count.std())
    # The count is a minimum over rows: rare draws dominate its spread when that is small, hence the floor.
    assert abs(ours_count.std() - ref_count.std()) <= 0.35 * spread + 1.5, (ours_count.std(), ref_count.std())

    ours_lengths, ours_runs = runs(ours)
    ref_lengths, ref_runs = runs(ref)
    # Runs within a draw are thinned together, so they are far from independent: loose run tolerances.
    assert abs(ours_runs.mean() - ref_runs.mean()) <= 0.12 * ref_runs.mean() + 0.05, (ours_runs.mean(), ref_runs.mean())
    if ref_lengths.size:
        size = max(ours_lengths.max(), ref_lengths.max()) + 1
        ours_hist = np.bincount(ours_lengths, minlength=size) / ours_lengths.size
        ref_hist = np.bincount(ref_lengths, minlength=size) / ref_lengths.size
        assert 0.5 * np.abs(ours_hist - ref_hist).sum() <= 0.12  # total variation distance
    else:
        assert ours_lengths.size == 0

    # Fraction of draws masking each position: per row with padding, pooled over rows without.
    ours_cover, ref_cover = ours.mean(0), ref.mean(0)
    if not padded:
        ours_cover, ref_cover = ours_cover.mean(0), ref_cover.mean(0)
    assert np.abs(ours_cover - ref_cover).max() <= (0.2 if padded else 0.1)
    width = 10
    whole = ours_cover.shape[-1] // width * width
    if whole:
        ours_bins = ours_cover[..., :whole].reshape(*ours_cover.shape[:-1], -1, width).mean(-1)
        ref_bins = ref_cover[..., :whole].reshape(*ref_cover.shape[:-1], -1, width).mean(-1)
        assert np.abs(ours_bins - ref_bins).max() <= (0.1 if padded else 0.06)


def assert_exact_properties(masks: np.ndarray, valid: tuple[int, ...] | None) -> None:
    """Same count in every row of a draw; nothing masked past a row's valid frames."""
    counts = masks.sum(-1)
    assert (counts == counts[:, :1]).all()
    if valid is not None:
        outside = np.arange(masks.shape[-1])[None] >= np.asarray(valid)[:, None]
        assert not masks[:, outside].any()


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_statistics(name: str) -> None:
    case = CASES[name]
    ours, ref = our_masks(case), reference_masks(case)
    assert ours.shape == ref.shape
    assert_exact_properties(ours, case.valid)
    assert_exact_properties(ref, case.valid)
    assert_same_distribution(ours, ref, padded=case.valid is not None)
    if case.no_overlap:
        # Starts are drawn in [s, e - length), so neither side ever masks a row's last valid frame.
        last = (np.full(case.batch, case.frames) if case.valid is None else np.asarray(case.valid)) - 1
        for masks in (ours, ref):
            assert not masks[:, np.arange(case.batch), last].any()


@pytest.mark.parametrize(
    ("config", "frames", "valid"),
    [
        (MaskingConfig(), 205, None),  # span count rounded per row even without padding, as in the reference
        (MaskingConfig(mask_prob=0.65, no_mask_overlap=True, mask_min_space=2), 180, PADDED),
        (MaskingConfig(mask_prob=0.0, mask_channel_prob=0.15, mask_channel_length=6), 40, None),  # 1 or 2 spans
        (
            MaskingConfig(
                mask_selection="normal",
                mask_other=2.0,
                mask_channel_prob=0.25,
                mask_channel_selection="uniform",
                mask_channel_other=2.0,
                mask_channel_length=5,
                no_mask_channel_overlap=True,
            ),
            180,
            PADDED[1:],
        ),
    ],
)
def test_mask_generator_matches_reference(config: MaskingConfig, frames: int, valid: tuple[int, ...] | None) -> None:
    batch, channels, draws = 8 if valid is None else len(valid), 48, 200
    ours_time, ours_channels, ref_time, ref_channels = [], [], [], []
    generator = MaskGenerator(config)
    rng = np.random.default_rng(7)
    for _ in range(draws):
        time_mask, channel_mask = generator(
            rng, batch, frames, channels=channels, valid_frames=None if valid is None else np.asarray(valid)
        )
        ours_time.append(time_mask)
        ours_channels.append(channel_mask)
    ref_generator = REF.MaskGenerator(TorchMaskingConfig(**dataclasses.asdict(config)))
    torch_generator = torch.Generator().manual_seed(7)
    pad = padding_mask(np.full(batch, frames) if valid is None else valid, frames)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        for _ in range(draws):
            indices, channel_mask = ref_generator(pad, channels=channels, generator=torch_generator)
            ref_time.append(None if indices is None else dense(indices, frames))
            ref_channels.append(None if channel_mask is None else channel_mask[:, 0].numpy())

    for ours, ref, padded in ((ours_time, ref_time, valid is not None), (ours_channels, ref_channels, False)):
        assert (ours[0] is None) == (ref[0] is None)
        if ours[0] is not None:
            assert_exact_properties(np.stack(ours), valid if ours is ours_time else None)
            assert_same_distribution(np.stack(ours), np.stack(ref), padded=padded)
    if ours_channels[0] is not None:
        assert ours_channels[0].shape == (batch, channels)


def test_probabilistic_rounding_of_span_count() -> None:
    # 12.5 expected spans that always fit apart: half the draws get 12 spans of 10 frames, half get 13.
    rng = np.random.default_rng(0)
    kwargs = {"mask_length": 10, "mask_type": "static", "mask_other": 0.0, "min_masks": 2, "min_space": 1}
    counts = np.array(
        [compute_span_mask(rng, 1, 400, mask_prob=0.3125, no_overlap=True, **kwargs).sum() for _ in range(400)]
    )
    assert set(np.unique(counts)) == {120, 130}
    assert abs((counts == 130).mean() - 0.5) < 0.1
    counts = [compute_span_mask(rng, 1, 400, mask_prob=0.3, no_overlap=True, **kwargs).sum() for _ in range(50)]
    assert set(counts) == {120}


@pytest.mark.slow
def test_span_count_rounding_per_row_or_per_batch() -> None:
    # 12.5 expected spans of 10 frames that always fit apart. Time masks round the count per row, and the batch keeps
    # its minimum (12 unless all 8 rows draw 13); channel masks and compute_span_mask without valid_frames round once
    # for the batch (12 or 13, evenly).
    config = MaskingConfig(
        mask_prob=0.125,
        no_mask_overlap=True,
        mask_channel_prob=0.125,
        mask_channel_length=10,
        no_mask_channel_overlap=True,
    )
    batch, frames, draws = 8, 1000, 200
    generator, rng = MaskGenerator(config), np.random.default_rng(5)
    time_counts, channel_counts = [], []
    for _ in range(draws):
        time_mask, channel_mask = generator(rng, batch, frames, channels=frames)
        time_counts.append(time_mask.sum(1)[0])
        channel_counts.append(channel_mask.sum(1)[0])
    shared = [
        compute_span_mask(
            rng, batch, frames, mask_prob=0.125, mask_length=10, mask_type="static", mask_other=0.0,
            min_masks=2, min_space=1, no_overlap=True,
        ).sum(1)[0]
        for _ in range(draws)
    ]  # fmt: skip
    ref_generator = REF.MaskGenerator(TorchMaskingConfig(**dataclasses.asdict(config)))
    torch_generator = torch.Generator().manual_seed(5)
    pad = padding_mask(np.full(batch, frames), frames)
    ref_time_counts, ref_channel_counts = [], []
    for _ in range(draws):
        indices, channel_mask = ref_generator(pad, channels=frames, generator=torch_generator)
        ref_time_counts.append(indices.shape[1])
        ref_channel_counts.append(int(channel_mask[0, 0].sum()))

    for counts in (time_counts, ref_time_counts):
        assert set(counts) <= {120, 130}
        assert np.mean(counts) < 121
    for counts in (channel_counts, ref_channel_counts, shared):
        assert set(counts) == {120, 130}
        assert abs(np.mean(counts) - 125) < 2


@pytest.mark.parametrize("no_overlap", [False, True])
def test_min_masks(no_overlap: bool) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = compute_span_mask(
            rng, 6, 200, **(STATIC_SPANS | {"mask_prob": 0.0, "min_masks": 3, "no_overlap": no_overlap})
        )
        lengths, per_row = runs(mask)
        if no_overlap:  # three separate spans of exactly 10 frames in every row
            assert (mask.sum(1) == 30).all()
            assert (per_row == 3).all()
            assert (lengths == 10).all()
        else:  # three spans that may overlap, then thinned to the batch minimum
            assert (mask.sum(1) == mask.sum(1)[0]).all()
            assert 10 <= mask.sum(1)[0] <= 30


def test_reproducible_for_a_seed() -> None:
    config = MaskingConfig(mask_channel_prob=0.2)
    generator = MaskGenerator(config)
    first = generator(np.random.default_rng(3), 16, 300, channels=64, valid_frames=np.arange(285, 301))
    again = generator(np.random.default_rng(3), 16, 300, channels=64, valid_frames=np.arange(285, 301))
    other = generator(np.random.default_rng(4), 16, 300, channels=64, valid_frames=np.arange(285, 301))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    for no_overlap in (False, True):
        kwargs = {
            "mask_prob": 0.5, "mask_length": 6, "mask_type": "poisson", "mask_other": 0.0,
            "min_masks": 2, "min_space": 1, "no_overlap": no_overlap,
        }  # fmt: skip
        a = compute_span_mask(np.random.default_rng(11), 8, 120, **kwargs)
        b = compute_span_mask(np.random.default_rng(11), 8, 120, **kwargs)
        c = compute_span_mask(np.random.default_rng(12), 8, 120, **kwargs)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_mask_generator_outputs() -> None:
    rng = np.random.default_rng(0)
    time_mask, channel_mask = MaskGenerator(MaskingConfig())(rng, 4, 100)
    assert time_mask.shape == (4, 100)
    assert time_mask.dtype == bool
    assert channel_mask is None
    assert MaskGenerator(MaskingConfig(mask_prob=0.0))(rng, 4, 100) == (None, None)
    channels_only = MaskGenerator(MaskingConfig(mask_prob=0.0, mask_channel_prob=0.5))
    time_mask, channel_mask = channels_only(rng, 4, 100, channels=32)
    assert time_mask is None
    assert channel_mask.shape == (4, 32)
    assert channel_mask.dtype == bool
    assert (channel_mask.sum(1) == channel_mask.sum(1)[0]).all()
    with pytest.raises(ValueError, match="channels"):
        MaskGenerator(MaskingConfig(mask_channel_prob=0.5))(rng, 4, 100)


def test_span_lengths() -> None:
    rng = np.random.default_rng(0)
    kwargs = {"mask_length": 10, "mask_other": 3.0}
    assert (span_lengths(rng, (5,), mask_type="static", **kwargs) == 10).all()
    uniform = span_lengths(rng, (20_000,), mask_type="uniform", **kwargs)
    assert uniform.min() == 3
    assert uniform.max() == 20
    normal = span_lengths(rng, (20_000,), mask_type="normal", **kwargs)
    assert normal.min() >= 1
    assert abs(normal.mean() - 10) < 0.1
    poisson = span_lengths(rng, (20_000,), mask_type="poisson", **kwargs)
    assert abs(poisson.mean() - 5) < 0.1  # rate uniform in [0, 10)
    assert {str(s) for s in MASK_TYPES} == {"static", "uniform", "normal", "poisson"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask_type": "gaussian"}, "unknown mask_type"),
        ({"mask_length": 0}, "mask_length"),
        ({"mask_prob": -0.1}, "mask_prob"),
        ({"mask_prob": float("nan")}, "mask_prob"),
        ({"min_masks": -1}, "min_masks"),
        ({"min_space": -1}, "min_space"),
        ({"mask_type": "normal", "mask_other": -1.0}, "mask_other"),
        ({"mask_type": "uniform", "mask_other": 21.0}, "mask_other"),
        ({"valid_frames": np.array([10, 10])}, "shape"),
        ({"valid_frames": np.array([10, 10, 101])}, r"\[0, 100\]"),
        ({"valid_frames": np.array([10, -1, 10])}, r"\[0, 100\]"),
        ({"valid_frames": np.array([10.5, 10, 10])}, "whole numbers"),
    ],
)
def test_invalid_arguments(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_span_mask(np.random.default_rng(0), 3, 100, **(STATIC_SPANS | change))


def test_invalid_config() -> None:
    # Checked once, where a config is loaded.
    with pytest.raises(ValueError, match="mask_selection must be one of"):
        check_masking(MaskingConfig(mask_selection="gaussian"), "mask")
    with pytest.raises(ValueError, match="mask_channel_length must be >= 1"):
        check_masking(MaskingConfig(mask_channel_prob=0.1, mask_channel_length=0), "mask_channel")
    with pytest.raises(ValueError, match="unknown mask_type"):  # a generator built from an unchecked config
        MaskGenerator(MaskingConfig(mask_selection="gaussian"))(np.random.default_rng(0), 2, 50)


@pytest.mark.parametrize("no_overlap", [False, True])
@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_edge_cases_do_not_crash(no_overlap: bool, mask_type: str) -> None:
    rng = np.random.default_rng(0)
    kwargs = {
        "mask_prob": 0.8, "mask_length": 10, "mask_type": mask_type, "mask_other": 1.0,
        "min_masks": 2, "min_space": 1, "no_overlap": no_overlap,
    }  # fmt: skip
    for batch, frames in ((0, 50), (3, 0), (3, 1), (3, 2), (3, 9)):
        mask = compute_span_mask(rng, batch, frames, **kwargs)
        assert mask.shape == (batch, frames)
        assert_exact_properties(mask[None], None)
    # A row with no valid frame masks nothing, so (equal counts) no row does: as in the reference.
    valid = np.array([50, 0, 30])
    mask = compute_span_mask(rng, 3, 50, valid_frames=valid, **kwargs)
    assert not mask.any()
    pad = padding_mask(valid, 50)
    reference = REF.compute_mask_indices(
        (3, 50), pad, 0.8, 10, mask_type, 1.0, 2, 1, no_overlap=no_overlap, generator=torch.Generator().manual_seed(0)
    )
    assert reference.shape == (3, 0)
    mask = compute_span_mask(rng, 3, 50, valid_frames=np.array([1, 1, 1]), **kwargs)
    assert_exact_properties(mask[None], (1, 1, 1))
    # With no minimum the span count can round to zero (the reference raises there): nothing is masked.
    mask = compute_span_mask(rng, 4, 50, **(kwargs | {"mask_prob": 0.0, "min_masks": 0}))
    assert not mask.any()


def test_no_overlap_without_min_space() -> None:
    # min_space=0 lets a free interval be exactly as long as a span (the reference raises there): it fills it.
    rng = np.random.default_rng(0)
    for _ in range(200):
        uniform = {"mask_prob": 0.9, "mask_length": 4, "mask_type": "uniform", "mask_other": 1.0, "min_space": 0}
        mask = compute_span_mask(rng, 4, 40, **(STATIC_SPANS | uniform | {"no_overlap": True}))
        assert_exact_properties(mask[None], None)
