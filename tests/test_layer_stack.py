"""Scanned transformer layers compute what unrolled layers compute: outputs, dropout, layer drop and gradients.

The reference comparison of scanned layers (and rematerialized ones) is in test_step_parity.py; here the two ways
are compared with each other where the reference cannot follow: dropout and layer drop on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spidr_jax.config import SpidRConfig
from spidr_jax.models import build_model
from spidr_jax.models.layer_stack import LayerExecution
from spidr_jax.train.state import split_model
from tests.reference import SMALL

FIELDS = SMALL | {"encoder_dropout": 0.1, "encoder_attention_dropout": 0.1, "encoder_layer_drop": 0.3}
EXECUTIONS = {
    "unrolled": LayerExecution(scan=False),
    "scanned": LayerExecution(scan=True),
    "scanned-remat-layer": LayerExecution(scan=True, remat="layer"),
    "unrolled-remat-dots": LayerExecution(scan=False, remat="dots"),
}


def student_outputs(execution: LayerExecution, num_layers: int | None, *, before_residual: bool) -> np.ndarray:
    model = build_model(SpidRConfig(**FIELDS), seed=3)
    model.set_layer_execution(execution)
    x = jax.random.normal(jax.random.key(1), (2, 40, FIELDS["encoder_embed_dim"]))
    frame_mask = jnp.arange(40)[None] < jnp.array([[40], [23]])

    @nnx.jit
    def outputs(model, x, key):
        layers = model.student.get_intermediate_outputs(
            x, frame_mask, num_layers, before_residual=before_residual, deterministic=False, rngs=nnx.Rngs(dropout=key)
        )
        return jnp.stack(layers)

    return np.asarray(outputs(model, x, jax.random.key(7)))


@pytest.mark.parametrize(("num_layers", "before_residual"), [(None, True), (None, False), (2, True)])
@pytest.mark.slow
def test_scanned_layers_equal_unrolled_ones_with_dropout_and_layer_drop(num_layers, before_residual):
    expected = student_outputs(EXECUTIONS["unrolled"], num_layers, before_residual=before_residual)
    assert expected.shape[0] == (num_layers or FIELDS["encoder_num_layers"])
    for name in ("scanned", "scanned-remat-layer"):
        ours = student_outputs(EXECUTIONS[name], num_layers, before_residual=before_residual)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5, err_msg=name)


def test_layer_drop_really_drops_and_layers_differ():
    """The comparison above is not vacuous: with dropout the layers' outputs differ from a deterministic run."""
    model = build_model(SpidRConfig(**FIELDS), seed=3)
    x = jax.random.normal(jax.random.key(1), (2, 40, FIELDS["encoder_embed_dim"]))
    deterministic = jnp.stack(model.student.get_intermediate_outputs(x))
    stochastic = student_outputs(EXECUTIONS["scanned"], None, before_residual=True)
    assert np.abs(stochastic - np.asarray(deterministic)).max() > 1e-2


@pytest.mark.slow
def test_gradients_are_the_same_however_the_layers_run():
    grads = {}
    for name, execution in EXECUTIONS.items():
        model = build_model(SpidRConfig(**FIELDS), seed=4)
        model.set_layer_execution(execution)
        split, params, teacher, codebooks = split_model(model)
        x = jax.random.normal(jax.random.key(2), (2, 30, FIELDS["encoder_embed_dim"]))

        def loss(params, split=split, teacher=teacher, codebooks=codebooks, x=x):
            student = split.merge(params, teacher, codebooks).student
            hidden = student(x, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(5)))
            return jnp.mean(hidden**2)

        grads[name] = jax.device_get(jax.jit(jax.grad(loss))(params)["student"])
    assert jax.tree.structure(grads["scanned"]) == jax.tree.structure(grads["unrolled"])  # one entry per layer
    for name, tree in grads.items():
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        for (path, ours), expected in zip(flat, jax.tree.leaves(grads["unrolled"]), strict=True):
            np.testing.assert_allclose(
                ours, expected, rtol=1e-4, atol=1e-6, err_msg=f"{name} {jax.tree_util.keystr(path)}"
            )


def test_auto_scans_on_accelerators_and_unrolls_on_cpus():
    assert LayerExecution.from_config("auto", "none", "gpu").scan
    assert LayerExecution.from_config("auto", "none", "tpu").scan
    assert not LayerExecution.from_config("auto", "none", "cpu").scan
    assert LayerExecution.from_config("scan", "dots", "cpu") == LayerExecution(scan=True, remat="dots")
    assert not LayerExecution.from_config("unroll", "none", "gpu").scan
    with pytest.raises(ValueError, match="remat must be one of none, layer, dots"):
        LayerExecution(remat="everything")
