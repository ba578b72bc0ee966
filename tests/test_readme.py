"""The README's Python example runs as written (on a small converted model and generated audio)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spidr_jax.convert.conversion import torch_to_orbax
from tests.reference import SMALL, reference_model, save_release

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch):
    model, cfg = reference_model("spidr", 0, **(SMALL | {"encoder_num_layers": 6}))
    torch_to_orbax(
        save_release(model, cfg, tmp_path / "release", "spidr"), tmp_path / "converted" / "spidr_base", "spidr"
    )
    rng = np.random.default_rng(0)
    for name, seconds in (("utt.flac", 3.2), ("a.flac", 1.1), ("b.flac", 2.3)):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)
    code = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example)
    assert len(namespace["layers"]) == 6
    assert namespace["units"].shape[0] == SMALL["num_codebooks"]
    frames = np.asarray(namespace["frames"])
    alone = namespace["model"].get_intermediate_outputs(namespace["batch"][1:2, : namespace["lengths"][1]])
    np.testing.assert_allclose(namespace["out"][-1][1, : frames[1]], alone[-1][0], atol=1e-5)
