"""16-bit compute: a bfloat16 run stays close to the reference's float32 run; loss scaling follows GradScaler; the
attention's backward products run in bfloat16."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spidr_jax.config import OptimizerConfig, SpidRConfig
from spidr_jax.models.transformer import attention_logits
from spidr_jax.sharding import data_mesh, replicated
from spidr_jax.train.loss_scale import GROWTH_INTERVAL, LossScale, init_loss_scale, update_loss_scale
from spidr_jax.train.state import init_model, new_train_state
from spidr_jax.train.step import StepDefinition, compile_train_step
from tests.reference import SMALL, reference_model
from tests.step_harness import CASES, FRAMES, OPTIMIZER, SAMPLES, jax_train
from tests.train_reference import dense_mask, random_batches, reference_train


@pytest.mark.slow
def test_bfloat16_run_stays_close_to_float32_reference():
    fields = CASES["spidr"]
    cfg = SpidRConfig(**fields)
    reference, _ = reference_model("spidr", seed=0, **fields)
    initial = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    batches = random_batches(3, 4, SAMPLES, FRAMES, 30, seed=1)
    ref_records, ref_states = reference_train(reference, OPTIMIZER, batches, cfg.freeze_step)
    bf16 = dataclasses.replace(OPTIMIZER, dtype="bfloat16")
    records, states, final = jax_train(initial, cfg, bf16, [(w, dense_mask(i, FRAMES)) for w, i in batches])
    for ref, ours in zip(ref_records, records, strict=True):
        np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=2e-3)
        np.testing.assert_allclose(ours["grad_norm"], ref["grad_norm"], rtol=5e-2)
        np.testing.assert_allclose(ours["target_ppl"], ref["target_ppl"], rtol=3e-2)
        np.testing.assert_allclose(ours["pred_ppl"], ref["pred_ppl"], rtol=1e-3)
    # Adam moves each weight by at most about lr per step: bf16 noise can flip signs, not more.
    budget = 2.0 * sum(r["lr"] for r in ref_records)
    for key in ("student.layers.0.attention.qkv.weight", "heads.0.0.weight", "mask_embedding"):
        assert np.max(np.abs(states[-1][key] - ref_states[-1][key])) <= budget
    assert float(final.loss_scale.scale) == 2.0**16  # GradScaler is on for bf16 too, no overflow here


def torch_scale_trajectory(finite_flags: list[bool]) -> list[float]:
    """GradScaler's scale after each step, for steps whose gradients are finite or not."""
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=0.0)
    scaler = torch.amp.GradScaler("cpu")
    out = []
    for finite in finite_flags:
        loss = param.sum() * (1.0 if finite else float("inf"))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        out.append(scaler.get_scale())
    return out


def test_loss_scale_follows_grad_scaler():
    flags = [True] * (GROWTH_INTERVAL + 3) + [False, False] + [True] * (GROWTH_INTERVAL + 1) + [False]
    expected = torch_scale_trajectory(flags)

    def body(state: LossScale, finite: jax.Array) -> tuple[LossScale, jax.Array]:
        new = update_loss_scale(state, finite, enabled=True)
        return new, new.scale

    _, scales = jax.lax.scan(body, init_loss_scale(enabled=True), jnp.asarray(flags))
    np.testing.assert_array_equal(np.asarray(scales), np.asarray(expected, np.float32))


@pytest.mark.slow
def test_overflowing_step_is_skipped():
    # bfloat16 (XLA:CPU lacks float16 attention); the loss scaling logic is the same for both 16-bit dtypes.
    cfg = SpidRConfig(**SMALL)
    opt = OptimizerConfig(lr=1e-3, warmup_steps=2, dtype="bfloat16", scheduler="constant")
    split, state = new_train_state(init_model(cfg, opt, seed=0), opt, seed=0)
    state = state.replace(loss_scale=LossScale(jnp.float32(2.0**16), jnp.int32(5)))
    mesh = data_mesh(jax.devices()[:1])
    sharding = replicated(mesh, state)
    step = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    before = jax.device_get(state.params)
    rng = np.random.default_rng(0)
    waveforms = rng.standard_normal((2, 1000)).astype(np.float32)
    waveforms[1, 500] = np.inf  # gradients become non-finite, as after an fp16 overflow
    batch = {"waveforms": jnp.asarray(waveforms), "mask": jnp.ones((2, 49), bool)}
    state, metrics = step(jax.device_put(state, sharding), batch, extractor_frozen=False)
    assert int(metrics["skipped"]) == 1
    assert float(state.loss_scale.scale) == 2.0**15
    assert int(state.loss_scale.growth_tracker) == 0
    assert int(state.step) == 1  # the schedule still advances, as the reference's scheduler does
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params)), strict=True):
        np.testing.assert_array_equal(old, new)


def float32_products(fn, *args) -> int:
    """How many matrix products of `fn`'s program (as lowered, before any compiler pass) have a float32 operand."""
    lines = jax.jit(fn).lower(*args).as_text().splitlines()
    products = [line.split(" : ")[-1] for line in lines if "stablehlo.dot_general" in line]
    return sum(1 for types in products if "f32>" in types.split("->")[0])


def test_bfloat16_attention_backward_runs_its_products_in_bfloat16():
    """The gradient of the logits is rounded to bfloat16 before its two products with q and k (as a fused attention
    kernel does), and the gradients stay those of the float32 product within bfloat16's rounding."""
    keys = jax.random.split(jax.random.key(0), 3)
    q, k = jax.random.normal(keys[0], (2, 40, 3, 16)), jax.random.normal(keys[1], (2, 40, 3, 16))
    weights = jax.random.normal(keys[2], (2, 3, 40, 40))

    def loss(logits_of, q, k):
        return jnp.sum(jax.nn.softmax(logits_of(q, k), axis=-1) * weights)

    plain = lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)  # noqa: E731
    grad = lambda logits_of: jax.grad(lambda q, k: loss(logits_of, q, k), argnums=(0, 1))  # noqa: E731
    q16, k16 = q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
    assert float32_products(grad(plain), q16, k16) == 2  # the two products of the float32 gradient
    assert float32_products(grad(attention_logits), q16, k16) == 0
    expected = grad(plain)(q16.astype(jnp.float32), k16.astype(jnp.float32))
    for got, want in zip(grad(attention_logits)(q16, k16), expected, strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=2e-2 * float(jnp.max(jnp.abs(want))))
    # In float32, the plain product and its gradient exactly.
    for got, want in zip(grad(attention_logits)(q, k), grad(plain)(q, k), strict=True):
        np.testing.assert_array_equal(got, want)
