"""The grouped convolution's hand-written weight gradient equals XLA's own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spidr_jax.models.grouped_conv import grouped_conv1d

HIGHEST = jax.lax.Precision.HIGHEST


def reference(x, kernel, groups, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (1,), (padding,), dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
        precision=HIGHEST,
    )  # fmt: skip


@pytest.mark.parametrize(("taps", "groups", "padding"), [(19, 16, (9, 9)), (8, 4, (4, 3)), (3, 1, (1, 1))])
def test_forward_and_gradients_match_xla(taps, groups, padding):
    rng = np.random.default_rng(taps)
    x = jnp.asarray(rng.standard_normal((3, 37, 64)), jnp.float32)
    kernel = jnp.asarray(0.1 * rng.standard_normal((taps, 64 // groups, 64)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((3, 37 + sum(padding) - taps + 1, 64)), jnp.float32)

    def loss(f):
        return lambda x, k: jnp.sum(weights * f(x, k))

    ours = loss(lambda x, k: grouped_conv1d(x, k, groups, padding, HIGHEST))
    theirs = loss(lambda x, k: reference(x, k, groups, padding))
    np.testing.assert_allclose(
        grouped_conv1d(x, kernel, groups, padding, HIGHEST), reference(x, kernel, groups, padding)
    )
    for got, expected in zip(jax.grad(ours, (0, 1))(x, kernel), jax.grad(theirs, (0, 1))(x, kernel), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
