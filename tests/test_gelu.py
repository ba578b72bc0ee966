"""spidr_jax.models.gelu: exact GELU with a rational erf, against torch's GELU computed in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from spidr_jax.models.gelu import gelu


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch's exact GELU and its derivative, in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.gelu(xt)
    y.sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def test_values_and_gradient_are_within_float32_rounding_of_torch_float64():
    x = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).standard_normal(10_000) * 3])
    x = x.astype(np.float32)
    expected, expected_grad = reference(x)
    value = np.asarray(jax.jit(gelu)(jnp.asarray(x)), np.float64)
    grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(gelu(x))))(jnp.asarray(x)), np.float64)
    # float32 rounding of x * Phi(x) is about 6e-8 * |x|; the rational erf adds about 1e-7 * |x|.
    assert np.max(np.abs(value - expected) / np.maximum(np.abs(x), 1.0)) < 3e-7
    assert np.max(np.abs(grad - expected_grad)) < 1e-6
    assert value[x < -6].max() <= 0  # no spurious positive values in the tail
    # No worse than torch's own float32 GELU, errors scaled as above: torch's absolute error depends on the CPU's
    # vector unit (AVX2 or AVX-512), so the largest |x| alone makes a fragile comparison.
    torch_float32 = torch.nn.functional.gelu(torch.tensor(x)).numpy()
    scale = np.maximum(np.abs(x), 1.0)
    assert np.max(np.abs(value - expected) / scale) <= 2 * np.max(np.abs(torch_float32 - expected) / scale)


def test_bfloat16_in_bfloat16_out_computed_in_float32():
    x = jnp.linspace(-5, 5, 101, dtype=jnp.bfloat16)
    y = gelu(x)
    dx = jax.grad(lambda x: jnp.sum(gelu(x).astype(jnp.float32)))(x)
    assert y.dtype == jnp.bfloat16
    assert dx.dtype == jnp.bfloat16
    expected, expected_grad = reference(np.asarray(x, np.float32))
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(np.asarray(dx, np.float32), expected_grad, atol=2e-2, rtol=1e-2)
