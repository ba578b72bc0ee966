"""`python -m spidr_jax.kmeans fit` on a model's features of a corpus, and extraction of its units (`--kmeans`)."""

from __future__ import annotations

import numpy as np
import pytest

from spidr_jax import kmeans as kmeans_cli
from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.subset import sample_hours
from spidr_jax.evaluate.kmeans import KMeansModel
from spidr_jax.storage.kmeans_file import read_kmeans_file
from tests.extraction_setup import hide_launcher, read_units, run_extract, tiny_corpus

LENGTHS = [16000, 9000, 12000, 7000, 11000, 8000]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("kmeans_cli"), LENGTHS)


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    hide_launcher(monkeypatch)


def run_kmeans(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    try:
        kmeans_cli.main([*map(str, args), "--quiet"])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_fit_then_extract_kmeans_units(corpus, tmp_path, capsys):
    checkpoint, manifest = corpus
    km = tmp_path / "km.npz"
    args = ["fit", "--checkpoint", checkpoint, "--manifest", manifest, "--layer", "2", "--k", "5", "--output", km]
    code, err = run_kmeans(capsys, *args, "--epochs", "2")
    assert code == 0, err
    assert f"checkpoint: {checkpoint} (converted model, step 0)" in err
    fitted = read_kmeans_file(km)
    assert fitted.k == 5
    assert fitted.layer == 2
    assert str(checkpoint) in fitted.checkpoint
    assert len(fitted.inertia) == 2
    assert fitted.inertia[1] <= fitted.inertia[0] * 1.0001  # a Lloyd pass does not raise it
    assert not (tmp_path / "km.npz.state").exists()  # removed once the result is written

    # The same seed, the same centroids.
    code, err = run_kmeans(capsys, *args[:-1], tmp_path / "again.npz", "--epochs", "2")
    assert code == 0, err
    np.testing.assert_array_equal(read_kmeans_file(tmp_path / "again.npz").centroids, fitted.centroids)

    # Units of the layer's features by these centroids: equal to assigning the extracted features.
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "f",
                            "--layer", "2")  # fmt: skip
    assert code == 0, err
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "u",
                            "--layer", "2", "--kmeans", km, "--units-format", "km")  # fmt: skip
    assert code == 0, err
    model = KMeansModel(fitted.centroids)
    for record in read_units(tmp_path / "u" / "units.jsonl"):
        expected = model.predict(np.load(tmp_path / "f" / f"{record['fileid']}.npy"))
        assert record["units"] == expected.tolist()
    assert (tmp_path / "u" / "dict.km.txt").read_text().splitlines() == [f"{i} 1" for i in range(5)]

    # Another layer than the fit's: one line naming the file.
    code, err = run_extract(capsys, "--checkpoint", checkpoint, "--manifest", manifest, "--output", tmp_path / "x",
                            "--layer", "3", "--kmeans", km)  # fmt: skip
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: {km}: fitted on layer 2, not on layer 3"


def test_max_hours_samples_the_corpus_and_bad_input_is_one_line(corpus, tmp_path, capsys):
    checkpoint, manifest = corpus
    km = tmp_path / "km.npz"
    args = ["fit", "--checkpoint", checkpoint, "--manifest", manifest, "--layer", "2", "--k", "3", "--output", km]
    code, err = run_kmeans(capsys, *args, "--epochs", "1", "--max-hours", str(2.5 / 3600))
    assert code == 0, err
    sampled = sample_hours(read_manifest(manifest), 2.5 / 3600, seed=0)
    assert 1 < len(sampled) < len(LENGTHS)
    assert f"from {len(sampled)} files" in err
    code, err = run_kmeans(capsys, *args[:-2], "--layer", "9", "--output", km)
    assert code == 1
    assert "--layer must be between 1 and 3, got 9" in err.strip().splitlines()[-1]
