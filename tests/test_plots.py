"""TensorBoard log reading and the PNG figures."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from spidr_jax.evaluate.plots import (
    plot_codebook_usage,
    plot_phone_unit_matrix,
    plot_training_curves,
    read_scalars,
)
from spidr_jax.evaluate.units_quality import phone_unit_probabilities

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(workdir, *, steps=range(0, 200, 10), start_loss=5.0):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(workdir))
    for step in steps:
        writer.add_scalar("train/loss", start_loss / (1 + step / 50), step)
        writer.add_scalar("train/target_ppl", 100 + step, step)
        writer.add_scalar("train/pred_ppl", 90 + step / 2, step)
        if step % 50 == 0:
            writer.add_scalar("dev-clean/loss", start_loss / (1 + step / 60), step)
    writer.add_text("config", "not a scalar", 0)
    writer.close()


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1024


def test_read_scalars(tmp_path):
    write_run(tmp_path)
    scalars = read_scalars(tmp_path, check_data_crc=True)
    assert set(scalars) == {"train/loss", "train/target_ppl", "train/pred_ppl", "dev-clean/loss"}
    steps, values = zip(*scalars["train/loss"], strict=True)
    assert list(steps) == list(range(0, 200, 10))
    np.testing.assert_allclose(values, [5.0 / (1 + s / 50) for s in steps], rtol=1e-6)
    assert scalars["dev-clean/loss"][1] == (50, pytest.approx(5.0 / (1 + 50 / 60), rel=1e-6))
    assert scalars["train/target_ppl"][-1] == (190, pytest.approx(290.0))


def test_read_scalars_resumed_and_truncated(tmp_path):
    write_run(tmp_path / "first", steps=range(0, 100, 10))
    write_run(tmp_path / "second", steps=range(50, 150, 10), start_loss=1.0)  # resumed from step 50
    scalars = read_scalars(tmp_path)
    loss = dict(scalars["train/loss"])
    assert sorted(loss) == list(range(0, 150, 10))
    assert loss[40] == pytest.approx(5.0 / (1 + 40 / 50))
    assert loss[60] == pytest.approx(1.0 / (1 + 60 / 50))  # the later file wins
    # A record cut in the middle (a run still writing; here the trailing text event) ends that file quietly.
    event_file = next((tmp_path / "second").glob("events.out.tfevents.*"))
    event_file.write_bytes(event_file.read_bytes()[:-7])
    assert len(read_scalars(tmp_path)["train/loss"]) == 15
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "missing")


def test_training_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    write_run(tmp_path / "run")
    output = plot_training_curves(tmp_path / "run", tmp_path / "figures" / "curves.png")
    assert output == tmp_path / "figures" / "curves.png"
    assert_png(output)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No loss or perplexity"):
        plot_training_curves(tmp_path / "empty", tmp_path / "none.png")


def test_codebook_usage_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    counts = {layer: rng.zipf(1.5 + layer / 10, 256).clip(max=10_000) * (rng.random(256) > 0.1) for layer in range(4)}
    assert_png(plot_codebook_usage(counts, tmp_path / "usage.png"))
    with pytest.raises(ValueError, match="never used"):
        plot_codebook_usage({0: np.zeros(8)}, tmp_path / "unused.png")


def test_phone_unit_matrix_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    inventory = [f"p{i}" for i in range(12)]
    data = {}
    for f in range(5):
        phones = np.repeat(rng.integers(0, 12, 40), 4)
        units = (phones[::2] * 5 + rng.integers(0, 5, len(phones) // 2)) % 64
        data[f"f{f}"] = ([inventory[p] for p in phones], units.tolist())
    proba, phone_order, unit_order = phone_unit_probabilities(data, num_units=64, only_active=True)
    assert_png(plot_phone_unit_matrix(proba, phone_order, tmp_path / "matrix.png", unit_order=unit_order))
    assert_png(plot_phone_unit_matrix(proba[:, :40], phone_order, tmp_path / "few.png", unit_order=unit_order[:40]))
    with pytest.raises(ValueError, match="proba must be"):
        plot_phone_unit_matrix(proba, phone_order[:-1], tmp_path / "bad.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'spidr-jax\[plot\]'"):
        plot_codebook_usage({0: np.ones(4)}, tmp_path / "usage.png")
