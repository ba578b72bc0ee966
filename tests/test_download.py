"""The opt-in download helper, offline: a file:// URL stands for the release server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from spidr_jax import load_pretrained
from spidr_jax.download import RELEASES
from tests.reference import reference_model


@pytest.mark.slow
def test_download_and_convert_from_file_url(tmp_path):
    model, _ = reference_model("spidr", seed=0)  # the released files are base-size models with default configs
    torch.save({"model": model.state_dict()}, tmp_path / "spidr_base.pt")
    result = subprocess.run(
        [sys.executable, "-m", "spidr_jax.download", "spidr_base", str(tmp_path / "converted"),
         "--url", (tmp_path / "spidr_base.pt").as_uri(), "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = load_pretrained(tmp_path / "converted")
    np.testing.assert_array_equal(np.asarray(loaded.mask_embedding[...]), model.mask_embedding.detach().numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "spidr_base.pt"]  # nothing left behind


def test_unreachable_url_fails_cleanly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "spidr_jax.download", "spidr_base", str(tmp_path / "out"),
         "--url", (tmp_path / "missing.pt").as_uri(), "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "missing.pt: download failed" in result.stderr
    assert not (tmp_path / "out").exists()
    assert set(RELEASES) == {"spidr_base", "dinosr_base_reproduced", "dinosr_base_original"}
