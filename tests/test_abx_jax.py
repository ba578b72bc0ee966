"""ABX in JAX against a plain NumPy oracle, hand-computed DTW and cell averages, bad inputs, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from spidr_jax import demo
from spidr_jax.errors import UsageError, UserError
from spidr_jax.evaluate.abx_cells import build_cells
from spidr_jax.evaluate.abx_items import ItemFileError, read_item_file, token_frames
from spidr_jax.evaluate.abx_jax import FeaturesError, abx_error_jax
from spidr_jax.evaluate.dtw import dtw_distances
from spidr_jax.evaluate.token_distances import Budget
from tests import abx_oracle

ROOT = Path(__file__).resolve().parents[1]
HEADER = "#file onset offset #phone prev-phone next-phone speaker"
PHONES = ["a", "e", "i", "o"]
SMALL = Budget(chunk_frames=24, tile_values=1 << 12, tile_inputs=1 << 14, buffer_values=1 << 13, dtw_values=1 << 12)


def write_item(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def random_task(tmp_path: Path, seed: int, *, speakers: int = 3, files: int = 2, tokens: int = 8):
    """A random item file (tokens of 1-4 frames, a few phones and contexts) with features and units."""
    rng = np.random.default_rng(seed)
    rows, features, units = [], {}, {}
    for s in range(speakers):
        for f in range(files):
            fileid, frames = f"s{s}_{f}", 4 * tokens + 4
            features[fileid] = rng.normal(size=(frames, 5)).astype(np.float32)
            units[fileid] = rng.integers(0, 3, frames)
            start = 1
            for _ in range(tokens):
                length = int(rng.integers(1, 5))
                phone, before, after = rng.choice(PHONES), rng.choice(PHONES[:2]), rng.choice(PHONES[:2])
                rows.append(f"{fileid} {start * 0.02:.2f} {(start + length) * 0.02 - 0.01:.3f} {phone} {before} "
                            f"{after} spk{s}")  # fmt: skip
                start += length
    return write_item(tmp_path / f"random{seed}.item", rows), features, units


# ---- DTW, worked by hand ---------------------------------------------------------------------------------------


def dtw_of(*pairs: tuple[list[int], list[int]]) -> list[float]:
    """DTW distances of pairs of unit sequences (0/1 frame distance), in one padded batch of the JAX code."""
    padded = np.full((4, 4, len(pairs)), 9.0, np.float32)  # padding holds a value no real cell has
    for p, (x, y) in enumerate(pairs):
        padded[: len(x), : len(y), p] = np.asarray(x)[:, None] != np.asarray(y)[None, :]
    rows, cols = jnp.asarray([len(x) for x, _ in pairs]), jnp.asarray([len(y) for _, y in pairs])
    return np.asarray(dtw_distances(jnp.asarray(padded), rows, cols)).tolist()


def test_dtw_hand_computed():
    got = dtw_of(([0, 1], [0, 1]), ([0, 1, 1], [1, 0]), ([0, 2, 1, 1], [0, 1]), ([5], [4, 5, 6]))
    # d = [[0, 1], [1, 0]]: C = [[0, 1], [1, 0]]; the path is the diagonal, 2 cells: 0 / 2.
    assert got[0] == 0.0
    # x = 0 1 1, y = 1 0: d = [[1, 0], [0, 1], [0, 1]]; C = [[1, 1], [1, 2], [1, 2]].
    # From (2, 1): up C[1,1] = 2, left C[2,0] = 1, diagonal C[1,0] = 1 <= both: diagonal to (1, 0), then up to
    # (0, 0): 3 cells, so 2 / 3.
    assert got[1] == pytest.approx(2 / 3, abs=1e-7)
    # x = 0 2 1 1, y = 0 1: d = [[0, 1], [1, 1], [1, 0], [1, 0]]; C = [[0, 1], [1, 1], [2, 1], [3, 1]].
    # From (3, 1): up C[2,1] = 1 is below the diagonal C[2,0] = 2 and left C[3,0] = 3: up to (2, 1); there the
    # diagonal C[1,0] = 1 ties with up C[1,1] = 1 and wins: (1, 0), then (0, 0): 4 cells, so 1 / 4.
    assert got[2] == pytest.approx(1 / 4, abs=1e-7)
    # One frame against three: the only path is the row, 3 cells: (1 + 0 + 1) / 3.
    assert got[3] == pytest.approx(2 / 3, abs=1e-7)
    # Angular distance: orthogonal frames are 1/2 apart; x = (e1, e2), y = (e1): C = [0, 1/2], 2 cells: 1/4.
    distances = np.asarray([[[0.0]], [[0.5]]], np.float32)
    assert float(dtw_distances(jnp.asarray(distances), jnp.asarray([2]), jnp.asarray([1]))[0]) == 0.25


def test_dtw_batch_matches_the_oracle_with_padding():
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 3, rng.integers(1, 7)), rng.integers(0, 3, rng.integers(1, 7))) for _ in range(64)]
    padded = np.full((6, 6, len(pairs)), 7.0, np.float32)  # padding holds values no real cell has
    for p, (x, y) in enumerate(pairs):
        padded[: len(x), : len(y), p] = x[:, None] != y[None, :]
    rows = jnp.asarray([len(x) for x, _ in pairs])
    cols = jnp.asarray([len(y) for _, y in pairs])
    got = np.asarray(dtw_distances(jnp.asarray(padded), rows, cols))
    expected = [abx_oracle.dtw(x, y) for x, y in pairs]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Stopping after the longest pair's last diagonal changes nothing.
    early = np.asarray(dtw_distances(jnp.asarray(padded), rows, cols, int(max(rows + cols) - 1)))
    np.testing.assert_array_equal(early, got)


# ---- the whole task against the oracle -------------------------------------------------------------------------


@pytest.mark.parametrize("speaker", ["within", "across"])
@pytest.mark.parametrize("context", ["within", "any"])
def test_matches_the_oracle(tmp_path, speaker, context):
    for seed in (0, 1):
        item, features, units = random_task(tmp_path, seed)
        for values in (features, units):
            expected = abx_oracle.abx(item, values, speaker, context)
            got = abx_error_jax(item, values, speaker=speaker, context=context, max_size_group=None,
                                max_x_across=None, budget=SMALL)  # fmt: skip
            assert got == pytest.approx(expected, abs=1e-12), (seed, values is units)


@pytest.mark.parametrize("speaker", ["within", "across"])
def test_matches_fastabx_where_installed(tmp_path, speaker):
    pytest.importorskip("fastabx")  # Python >= 3.12 and torch: not in CI
    from spidr_jax.evaluate.abx import abx_error

    item, features, units = random_task(tmp_path, 5)
    for values in (features, units):
        for context in ("within", "any"):
            limits = {"max_size_group": None, "max_x_across": None}
            expected = abx_error(item, values, speaker=speaker, context=context, **limits)
            got = abx_error_jax(item, values, speaker=speaker, context=context, **limits)
            assert got == pytest.approx(expected, abs=1e-6)  # fastabx keeps cell scores in float32


def test_codebook_probabilities_with_kl(tmp_path):
    item, features, _ = random_task(tmp_path, 2)
    probabilities = {k: np.exp(v) / np.exp(v).sum(1, keepdims=True) for k, v in features.items()}
    first = abx_error_jax(item, probabilities, distance="kl_symmetric", max_size_group=None, budget=SMALL)
    assert 0.0 <= first <= 1.0
    # KL between identical distributions is 0: features equal to their phone's prototype score 0 errors.
    tokens = read_item_file(item)
    prototypes = np.eye(len(tokens.phones), dtype=np.float32) * 0.9 + 0.1 / len(tokens.phones)
    exact = {fileid: np.full((len(v), len(tokens.phones)), 1 / len(tokens.phones), np.float32)
             for fileid, v in features.items()}  # fmt: skip
    for t in range(len(tokens)):
        exact[tokens.fileids[tokens.file[t]]][tokens.start[t] : tokens.stop[t]] = prototypes[tokens.phone[t]]
    assert abx_error_jax(item, exact, distance="kl_symmetric", context="any", max_size_group=None) == 0.0


# ---- the cell averaging, worked by hand ------------------------------------------------------------------------


def test_cell_averaging_by_hand(tmp_path):
    # Tokens of one frame each; units, so d(x, y) is 0 or 1. Within speaker, within context:
    #   spk1, context (z, z): A = {0, 1}, B = {0}:  x=0: d(0,1)=1 > d(0,0)=0 wrong (1); x=1: d(1,0)=1 = d(1,0)=1
    #     tie (1/2): cell (A, B) = 1.5 / 2 = 0.75.  (B, A): B has one token, no cell.
    #   spk1, context (y, y): A = {0, 0}, B = {1}: x always right: cell (A, B) = 0.
    #   spk2, context (z, z): A = {1, 1}, B = {0, 1}: x=1: a=1 (d 0) vs b=0 (d 1) right, vs b=1 (d 0) tie:
    #     per x 1/2 of 2 triplets; cell (A, B) = (0.5 + 0.5) / 4 = 0.25. (B, A): A' = {0, 1}, B' = {1, 1}:
    #     x=0: a=1 (d 1) vs b=1 (d 1) twice, ties: 1; x=1: a=0 (d 1) vs b=1 (d 0) twice, wrong: 2 -> 3 / 4.
    # Phone pair (A, B): spk1 mean over contexts (0.75 + 0) / 2 = 0.375, spk2 0.25 -> mean 0.3125.
    # Phone pair (B, A): spk2 only, 0.75. The score: (0.3125 + 0.75) / 2 = 0.53125.
    rows, units = [], {}
    for fileid, speaker, context, phones, values in [
        ("f1", "spk1", "z", ["A", "A", "B"], [0, 1, 0]),
        ("f2", "spk1", "y", ["A", "A", "B"], [0, 0, 1]),
        ("f3", "spk2", "z", ["A", "A", "B", "B"], [1, 1, 0, 1]),
    ]:
        units[fileid] = np.asarray(values)
        rows += [f"{fileid} {i * 0.02:.2f} {(i + 1) * 0.02:.2f} {p} {context} {context} {speaker}"
                 for i, p in enumerate(phones)]  # fmt: skip
    item = write_item(tmp_path / "hand.item", rows)
    assert abx_error_jax(item, units, speaker="within", context="within") == 0.53125
    assert abx_oracle.abx(item, units, "within", "within") == 0.53125


def test_across_averaging_by_hand(tmp_path):
    # One context. spk1: A = {0}, B = {1}; spk2: A = {0}, B = {0}; X is the A phone of the other speaker.
    #   (A, B) with A, B of spk1, X = spk2's A token (0): d(x, a) = 0 < d(x, b) = 1: 0.
    #   (A, B) of spk2, X = spk1's A (0): d(0, 0) = 0 = d(0, 0): tie 0.5.   -> phone pair (A, B): (0 + 0.5) / 2.
    #   (B, A) of spk1: A' = {1}, B' = {0}, X = spk2's B token (0): d(0, 1) = 1 > d(0, 0) = 0: 1.
    #   (B, A) of spk2: A' = {0}, B' = {0}, X = spk1's B (1): d(1, 0) = d(1, 0): 0.5. -> (B, A): 0.75.
    # Score: (0.25 + 0.75) / 2 = 0.5.
    rows = ["f1 0.00 0.02 A c c spk1", "f1 0.02 0.04 B c c spk1", "f2 0.00 0.02 A c c spk2", "f2 0.02 0.04 B c c spk2"]
    units = {"f1": np.asarray([0, 1]), "f2": np.asarray([0, 0])}
    item = write_item(tmp_path / "across.item", rows)
    assert abx_error_jax(item, units, speaker="across") == 0.5
    assert abx_oracle.abx(item, units, "across", "within") == 0.5


# ---- frames of a token, subsampling ----------------------------------------------------------------------------


def test_token_frames_use_frame_centres():
    fifty = Decimal(50)
    # Frame i is centred at (i + 1/2) * 20 ms: [0.01, 0.05] holds the centres of frames 0 and 1 (0.01 and 0.03 s)
    # and 2 (0.05 s, on the boundary).
    assert token_frames(Decimal("0.01"), Decimal("0.05"), fifty) == (0, 3)
    assert token_frames(Decimal("0.0101"), Decimal("0.0499"), fifty) == (1, 2)
    assert token_frames(Decimal("0.01"), Decimal("0.05"), fifty, librilight_slicing=True) == (0, 2)
    assert token_frames(Decimal("0.2925"), Decimal("0.4725"), fifty) == (15, 24)


def test_subsampling(tmp_path):
    item, _, _ = random_task(tmp_path, 3, speakers=4, files=3, tokens=12)
    tokens = read_item_file(item)
    full = build_cells(tokens, speaker="across", context="any", max_size_group=None, max_x_across=None)
    small = build_cells(tokens, speaker="across", context="any", max_size_group=2, max_x_across=1, seed=5)
    assert full.sizes.max() > 2
    assert small.sizes.max() == 2
    pairs, counts = np.unique(np.stack([small.cell_a, small.cell_b], 1), axis=0, return_counts=True)
    assert counts.max() == 1
    assert len(pairs) == len(np.unique(np.stack([full.cell_a, full.cell_b], 1), axis=0))
    again = build_cells(tokens, speaker="across", context="any", max_size_group=2, max_x_across=1, seed=5)
    np.testing.assert_array_equal(again.cell_x, small.cell_x)
    np.testing.assert_array_equal(again.members, small.members)
    other = build_cells(tokens, speaker="across", context="any", max_size_group=2, max_x_across=1, seed=6)
    assert not np.array_equal(other.members, small.members) or not np.array_equal(other.cell_x, small.cell_x)


# ---- bad input: one line, naming the file --------------------------------------------------------------------


def test_bad_item_files(tmp_path):
    features = {"f": np.zeros((10, 3), np.float32)}
    cases = {
        "empty.item": ("", "is empty"),
        "header.item": ("file onset offset\nf 0 0.1 a b c s\n", "first line must be the header"),
        "fields.item": (f"{HEADER}\nf 0.00 0.10 a b\n", "line 2: expected 7 fields"),
        "onset.item": (f"{HEADER}\nf zero 0.10 a b c s\n", "line 2: onset 'zero' is not a number"),
        "order.item": (f"{HEADER}\nf 0.10 0.05 a b c s\n", "line 2: offset 0.05 is not after onset 0.10"),
        "short.item": (f"{HEADER}\nf 0.00 0.10 a b c s\nf 0.031 0.039 a b c s\n", "1 tokens hold no frame"),
        "nothing.item": (f"{HEADER}\n", "no tokens"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ItemFileError, match=message) as error:
            abx_error_jax(tmp_path / name, features)
        assert name in str(error.value)
        assert "\n" not in str(error.value)
    with pytest.raises(ItemFileError, match="item file not found"):
        abx_error_jax(tmp_path / "absent.item", features)


def test_bad_features(tmp_path):
    item, features, units = random_task(tmp_path, 4)
    missing = {k: v for k, v in features.items() if k not in ("s0_0", "s1_1")}
    with pytest.raises(ItemFileError, match=r"2 of its 6 files are not in the features: s0_0, s1_1"):
        abx_error_jax(item, missing)
    short = dict(features, s2_1=features["s2_1"][:3])
    with pytest.raises(ItemFileError, match=r"s2_1, frames .* ends after the last of the file's 3 frames"):
        abx_error_jax(item, short)
    with pytest.raises(FeaturesError, match="mixes unit ids"):
        abx_error_jax(item, dict(features, s0_0=units["s0_0"]))
    with pytest.raises(FeaturesError, match="non-finite"):
        abx_error_jax(item, dict(features, s1_0=np.full_like(features["s1_0"], np.nan)))
    with pytest.raises(FeaturesError, match="1-D features must be integer unit ids"):
        abx_error_jax(item, dict(features, s0_0=np.zeros(40, np.float32)))
    with pytest.raises(UsageError, match="0/1 distance"):
        abx_error_jax(item, units, distance="euclidean")
    single = write_item(tmp_path / "single.item", ["s0_0 0.02 0.06 a b b spk0", "s0_0 0.06 0.10 e b b spk0"])
    with pytest.raises(ItemFileError, match="no ABX cell within speaker"):
        abx_error_jax(single, features)
    assert issubclass(ItemFileError, UserError)


# ---- the command line ------------------------------------------------------------------------------------------


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spidr_jax.evaluate", "abx", *args],
                          capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip


def demo_features(folder: Path, seed: int = 0) -> Path:
    """Random 16-dim features for every dev file of the demo corpus, one .npy per file, at 50 Hz."""
    rng = np.random.default_rng(seed)
    for line in demo.relative_manifest_path("dev").read_text().splitlines()[1:]:
        fileid, _, samples = line.split(",")
        np.save(folder / f"{fileid}.npy", rng.normal(size=(int(samples) // 320, 16)).astype(np.float32))
    return folder


@pytest.mark.slow
def test_cli_on_demo_features(tmp_path, capsys):
    features = demo_features(tmp_path)
    item = demo.item_path("dev")
    result = evaluate("--features", str(features), "--item", str(item), "--speaker", "both", "--context", "any",
                      "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    scores = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["speaker"] for s in scores] == ["within", "across"]
    arrays = {path.stem: np.load(path) for path in features.glob("*.npy")}
    for score in scores:
        assert score["error"] == abx_error_jax(item, arrays, speaker=score["speaker"], context="any")
        assert 0.4 < score["error"] < 0.6  # random features: chance
    code, out, _ = run_main(capsys, "--features", str(features), "--item", str(item), "--context", "any")
    assert code == 0
    assert out == f"ABX within speaker, any context, features: {100 * scores[0]['error']:.2f}% error\n"


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The evaluation CLI in this process: (exit code, stdout, stderr)."""
    from spidr_jax.evaluate.cli import main

    try:
        main(["abx", *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_errors(tmp_path, capsys):
    features = demo_features(tmp_path)
    (features / "S01_0000.npy").unlink()
    item = str(demo.item_path("dev"))
    code, _, err = run_main(capsys, "--features", str(features), "--item", item)
    assert code == 1
    assert err.count("\n") == 1
    assert "dev.item: 1 of its 48 files are not in" in err
    assert "S01_0000" in err
    garbled = tmp_path / "garbled.item"
    garbled.write_text(f"{HEADER}\nS01_0008 0.1\n")
    code, _, err = run_main(capsys, "--features", str(features), "--item", str(garbled))
    assert code == 1
    assert "garbled.item line 2: expected 7 fields" in err
    code, _, err = run_main(capsys, "--item", item)
    assert code == 2
    assert "either --checkpoint" in err
    code, _, err = run_main(capsys, "--features", str(features), "--item", item, "--max-size-group", "-1")
    assert code == 2
    assert "--max-size-group" in err
    code, _, err = run_main(capsys, "--features", str(features), "--item", item, "--backend", "fastabx")
    if importlib.util.find_spec("fastabx") is None:  # the one line names the extra
        assert code == 1
        assert "pip install 'spidr-jax[abx]'" in err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tests.reference import tiny_orbax_checkpoint

    return tiny_orbax_checkpoint(tmp_path_factory.mktemp("model"))


def two_files(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest and an item file of two speakers' first files of the demo dev split."""
    rows = demo.manifest_path("dev").read_text().splitlines()
    chosen = [row for row in rows[1:] if row.split(",")[0] in ("S01_0000", "S02_0001")]
    manifest = tmp_path / "two.csv"
    manifest.write_text("\n".join([rows[0], *chosen]) + "\n")
    lines = demo.item_path("dev").read_text().splitlines()[1:]
    item = write_item(tmp_path / "two.item", [line for line in lines if line.split()[0] in ("S01_0000", "S02_0001")])
    return manifest, item


@pytest.mark.parametrize("kind", [[], ["--units"], ["--probabilities"]])
def test_cli_on_a_model(tmp_path, capsys, tiny_checkpoint, kind):
    manifest, item = two_files(tmp_path)
    model = ["--checkpoint", str(tiny_checkpoint), "--manifest", str(manifest), "--item", str(item), "--json"]
    code, out, err = run_main(capsys, *model, "--layer", "3", "--speaker", "across", "--context", "any", *kind)
    assert code == 0, err[-2000:]
    score = json.loads(out)
    assert score["speaker"] == "across"
    assert 0.0 <= score["error"] <= 1.0
    assert score["scored"] == {"[]": "layer 3 features", "['--units']": "layer 3 units"}.get(
        str(kind), "layer 3 codebook probabilities"
    )
    if kind == ["--units"]:
        code, _, err = run_main(capsys, *model, "--layer", "1", "--units")
        assert code == 1
        assert "units exist for layers 2..4" in err
