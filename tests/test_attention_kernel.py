"""The attention kernel setting: XLA's by default, cuDNN's only where it can run, one line otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from spidr_jax.config.model import ConfigError
from spidr_jax.models.attention_kernel import attention_kernel
from spidr_jax.models.transformer import SelfAttention
from tests.tone_corpus import write_tone_corpus
from tests.train_cli import ROOT, TINY


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_auto_and_xla_choose_xla_everywhere(platform):
    for setting in ("auto", "xla"):
        assert attention_kernel(setting, platform, jnp.bfloat16) == "xla"


def test_cudnn_only_on_gpus_in_16_bits():
    assert attention_kernel("cudnn", "gpu", jnp.bfloat16) == "cudnn"
    assert attention_kernel("cudnn", "gpu", jnp.float16) == "cudnn"
    with pytest.raises(ConfigError, match=r"^run.attention='cudnn' needs an NVIDIA GPU; this run's devices are tpu$"):
        attention_kernel("cudnn", "tpu", jnp.bfloat16)
    with pytest.raises(ConfigError, match=r"^--attention='cudnn' needs bfloat16 or float16 compute, not float32$"):
        attention_kernel("cudnn", "gpu", jnp.float32, field="--attention")
    with pytest.raises(ConfigError, match=r"run\.attention must be"):
        attention_kernel("flash", "gpu", jnp.bfloat16)


@pytest.mark.slow
def test_the_padded_keys_are_left_out_by_length():
    """The kernels take the keys' valid lengths: a padded row attends as it does alone."""
    attention = SelfAttention(16, 2, qkv_bias=True, dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    key_mask = jnp.arange(10)[None, :] < jnp.array([10, 6])[:, None]
    padded = attention(x, key_mask, deterministic=True, rngs=None)
    alone = attention(x[1:, :6], None, deterministic=True, rngs=None)
    assert jnp.allclose(padded[1, :6], alone[0], atol=1e-6)
    assert jnp.allclose(padded[0], attention(x[:1], None, deterministic=True, rngs=None)[0], atol=1e-6)


@pytest.mark.slow
def test_training_with_cudnn_on_a_cpu_stops_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("\n".join(write_tone_corpus(tmp_path, 4)) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}",
         f"--config.data.manifest={tmp_path / 'train.csv'}", f"--config.run.workdir={tmp_path / 'run'}",
         "--config.run.attention=cudnn"],
        cwd=ROOT, env=os.environ | {"JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    errors = ["error:" + line.split("error:", 1)[1] for line in result.stderr.splitlines() if "error:" in line]
    assert errors == ["error: run.attention='cudnn' needs an NVIDIA GPU; this run's devices are cpu"]
