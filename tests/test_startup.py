"""Start-up cost of the command-line tools: torch (installed next to the reference) is never imported by them."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_training_and_extraction_modules_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import spidr_jax.extract, spidr_jax.train.loop, spidr_jax.evaluate.plots\n"
        "from spidr_jax.train.tensorboard import MetricsWriter\n"
        f"writer = MetricsWriter({str(tmp_path)!r}, enabled=True)\n"
        "writer.scalars('train', {'loss': 2.5}, 3)\n"
        "writer.close()\n"
        f"print(spidr_jax.evaluate.plots.read_scalars({str(tmp_path)!r}))\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["{'train/loss': [(3, 2.5)]}", "False"]
    # torch itself still imports afterwards, in a process where tensorboardX came first.
    after = code + "import torch\nprint(torch.__name__)\n"
    done = subprocess.run([sys.executable, "-c", after], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "torch"
