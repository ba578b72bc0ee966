"""The JAX train step against the reference's training loop: several consecutive steps, same init and batches.

Dropout is off; the steps cross freeze_step (extractor and projection leave the optimizer) and the phases of the
EMA schedule (SpidR: exponential, then exactly 1 past the threshold; DinoSR: linear, final, then frozen at 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from spidr_jax.config import DinoSRConfig, OptimizerConfig, SpidRConfig
from spidr_jax.models.extractor import conv_output_lengths
from spidr_jax.models.layer_stack import LayerExecution
from tests.reference import reference_model
from tests.step_harness import CASES, FRAMES, OPTIMIZER, SAMPLES, jax_train
from tests.train_reference import dense_mask, random_batches, random_padded_batches, reference_train


def run_both(model_type: str, opt: OptimizerConfig, num_steps: int = 6, execution: LayerExecution | None = None):
    fields = CASES[model_type]
    cfg = (SpidRConfig if model_type == "spidr" else DinoSRConfig)(**fields)
    reference, _ = reference_model(model_type, seed=0, **fields)
    initial = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    batches = random_batches(num_steps, 4, SAMPLES, FRAMES, 30, seed=1)
    ref_records, ref_states = reference_train(reference, opt, batches, cfg.freeze_step)
    dense = [(w, dense_mask(idx, FRAMES)) for w, idx in batches]
    records, states, _ = jax_train(initial, cfg, opt, dense, execution=execution)
    return initial, ref_records, ref_states, records, states


@pytest.mark.parametrize(
    ("model_type", "execution"),
    [
        ("spidr", LayerExecution(scan=False)),
        ("dinosr", LayerExecution(scan=False)),
        ("spidr", LayerExecution(scan=True)),  # scanned layers: one compiled body over the stacked weights
        ("dinosr", LayerExecution(scan=True, remat="layer")),  # and the layers recomputed in the backward pass
    ],
    ids=["spidr-unrolled", "dinosr-unrolled", "spidr-scanned", "dinosr-scanned-remat"],
)
@pytest.mark.slow
def test_consecutive_steps_match_reference(model_type, execution):
    initial, ref_records, ref_states, records, states = run_both(model_type, OPTIMIZER, execution=execution)
    for step, (ref, ours) in enumerate(zip(ref_records, records, strict=True)):
        for name in ("loss", "grad_norm", "target_ppl", "pred_ppl"):
            np.testing.assert_allclose(ours[name], ref[name], rtol=2e-5, err_msg=f"step {step}: {name}")
        np.testing.assert_allclose(ours["lr"], ref["lr"], rtol=1e-6, err_msg=f"step {step}: lr")
        np.testing.assert_allclose(ours["ema_decay"], ref["ema_decay"], atol=1e-7, err_msg=f"step {step}: decay")
        for key, expected in ref_states[step].items():
            scale = max(1.0, float(np.max(np.abs(expected))))
            np.testing.assert_allclose(
                states[step][key], expected, rtol=0, atol=2e-6 * scale, err_msg=f"step {step}: {key}"
            )
    # The parameters really moved, the teacher moved while the EMA ran, and the extractor stopped at freeze_step.
    last = ref_states[-1]
    key = "student.layers.0.feed_forward.intermediate_dense.weight"
    assert np.max(np.abs(last[key] - initial[key])) > 1e-4
    conv = "feature_extractor.conv_layers.0.conv.weight"
    freeze = CASES[model_type]["freeze_step"]
    np.testing.assert_array_equal(states[-1][conv], states[freeze - 1][conv])
    assert not np.array_equal(states[freeze - 2][conv], states[freeze - 1][conv])
    assert not np.array_equal(
        states[0]["teacher.layers.0.attention.qkv.weight"], initial["teacher.layers.0.attention.qkv.weight"]
    )
    np.testing.assert_array_equal(
        states[-1]["teacher.layers.0.attention.qkv.weight"], states[-2]["teacher.layers.0.attention.qkv.weight"]
    )


@pytest.mark.slow
def test_other_schedule_and_no_warmup_match_reference():
    opt = OptimizerConfig(lr=1e-3, warmup_steps=0, max_steps=5, max_norm=10.0, dtype="float32", scheduler="cosine")
    _, ref_records, ref_states, records, states = run_both("spidr", opt, num_steps=3)
    for ref, ours in zip(ref_records, records, strict=True):
        np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=2e-5)
        np.testing.assert_allclose(ours["lr"], ref["lr"], rtol=1e-6)
    key = "student.layers.3.attention.proj.weight"
    np.testing.assert_allclose(states[-1][key], ref_states[-1][key], atol=2e-6)


@pytest.mark.parametrize("model_type", ["spidr", "dinosr"])
@pytest.mark.slow
def test_padded_batches_match_reference(model_type):
    """data.enable_padding: zero-padded rows, attention masked, masks on valid frames; the last batch has no padding.

    The reference's padded step convolves the zeros in its extractor and normalizes the teacher targets over the
    whole padded length; the JAX step must give the same numbers. DinoSR runs with the group-norm extractor,
    whose first layer's statistics then cover the padding.
    """
    fields = CASES[model_type] | ({"extractor_mode": "group_norm"} if model_type == "dinosr" else {})
    cfg = (SpidRConfig if model_type == "spidr" else DinoSRConfig)(**fields)
    reference, _ = reference_model(model_type, seed=0, **fields)
    initial = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    frames_of = lambda lengths: conv_output_lengths(lengths, cfg.extractor_conv_layer_config)  # noqa: E731
    batches = random_padded_batches(4, 4, SAMPLES, 12, seed=2, frames_of=frames_of)
    full = random_batches(1, 4, SAMPLES, FRAMES, 12, seed=3)[0]
    batches.append((*full, np.full(4, SAMPLES, np.int32)))  # a padded-mode batch whose rows all fill it
    assert all(int(lengths.min()) < SAMPLES for _, _, lengths in batches[:-1])
    ref_records, ref_states = reference_train(reference, OPTIMIZER, batches, cfg.freeze_step)
    dense = [(w, dense_mask(idx, FRAMES), lengths) for w, idx, lengths in batches]
    records, states, _ = jax_train(initial, cfg, OPTIMIZER, dense)
    for step, (ref, ours) in enumerate(zip(ref_records, records, strict=True)):
        for name in ("loss", "grad_norm", "target_ppl", "pred_ppl"):
            np.testing.assert_allclose(ours[name], ref[name], rtol=2e-5, err_msg=f"step {step}: {name}")
        for key, expected in ref_states[step].items():
            scale = max(1.0, float(np.max(np.abs(expected))))
            np.testing.assert_allclose(
                states[step][key], expected, rtol=0, atol=2e-6 * scale, err_msg=f"step {step}: {key}"
            )
    # The padding matters: the same batches without their lengths give another loss.
    unpadded, _, _ = jax_train(initial, cfg, OPTIMIZER, [(w, m) for w, m, _ in dense[:1]])
    assert abs(unpadded[0]["loss"] - records[0]["loss"]) > 1e-4 * abs(records[0]["loss"])
