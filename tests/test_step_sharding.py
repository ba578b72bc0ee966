"""1 device = 8 devices: the step on 8 simulated CPU devices equals the 1-device step on the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model_type", ["spidr", "dinosr"])
def test_eight_devices_equal_one(model_type):
    result = subprocess.run(
        [sys.executable, "-m", "tests.multi_device_check", model_type],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    for one, eight in (pair for step in report["metrics"] for pair in step.values()):
        np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-6)
    assert report["max_param_diff"] <= 1e-5 * max(1.0, report["max_param_scale"])
