"""Which kernel computes softmax attention where no dropout applies: XLA's own fusion or cuDNN's fused kernel.

Both go through `jax.nn.dot_product_attention` with the keys' valid lengths (the padded frames of a batch), so
they compute the same function. cuDNN's kernel needs an NVIDIA GPU and 16-bit inputs; attention with dropout (the
student in training, `encoder_attention_dropout > 0`) materializes its probabilities whatever the setting.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp

from spidr_jax.config.model import ConfigError

AttentionKernel = Literal["xla", "cudnn"]
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def attention_kernel(setting: str, platform: str, dtype: jnp.dtype, *, field: str = "run.attention") -> AttentionKernel:
    """The kernel for `setting` ("auto", "xla", "cudnn") on `platform` ("cpu", "gpu", "tpu") in `dtype`.

    "auto" is XLA on every platform until a GPU measurement says otherwise (BENCHMARKS.md). Raises ConfigError,
    naming `field`, for "cudnn" where it cannot run.
    """
    if setting in ("auto", "xla"):
        return "xla"
    if setting != "cudnn":
        raise ConfigError(f"{field} must be 'auto', 'xla' or 'cudnn', got {setting!r}")
    if platform != "gpu":
        raise ConfigError(f"{field}='cudnn' needs an NVIDIA GPU; this run's devices are {platform}")
    if jnp.dtype(dtype) not in CUDNN_DTYPES:
        raise ConfigError(f"{field}='cudnn' needs bfloat16 or float16 compute, not {jnp.dtype(dtype).name}")
    return "cudnn"
