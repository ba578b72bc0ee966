"""Forward-pass parity with the reference: intermediate outputs, codebook predictions and units, the teacher,
and the masked-prediction loss, for models converted from reference checkpoints by the converter."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spidr_jax.convert.conversion import torch_to_orbax
from spidr_jax.models.objective import objective_metrics, objective_sums
from spidr_jax.pretrained import load_pretrained
from tests.reference import SMALL, reference_model, save_release, scale_error

TOLERANCE = 1e-4  # max abs error relative to the output scale

VARIANTS = {
    "spidr-small": ("spidr", SMALL),
    "dinosr-small": ("dinosr", SMALL),
    "group-norm-conv-bias": ("spidr", SMALL | {"extractor_mode": "group_norm", "extractor_conv_bias": True}),
    "qkv-bias-pre-ln": ("dinosr", SMALL | {"encoder_qkv_bias": True, "encoder_layer_norm_first": True}),
    "spidr-pre-ln-even-kernel": (
        "spidr",
        SMALL | {"encoder_layer_norm_first": True, "encoder_pos_conv_kernel": 16, "encoder_pos_conv_depth": 2},
    ),
    "one-codebook": ("spidr", SMALL | {"num_codebooks": 1, "codebook_size": 32}),
    "codebook-per-layer": ("dinosr", SMALL | {"num_codebooks": 4}),
}


def convert(tmp_path, model_type, fields, seed=0):
    model, cfg = reference_model(model_type, seed, **fields)
    pt = save_release(model, cfg, tmp_path / "release", model_type)
    return model, load_pretrained(torch_to_orbax(pt, tmp_path / "orbax", model_type))


def random_mask_indices(batch, frames, num_masked, seed):
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(frames, num_masked, replace=False)) for _ in range(batch)])


def check_all_outputs(reference, ours, waveforms):
    wav_t, wav_j = torch.from_numpy(waveforms), jnp.asarray(waveforms)
    with torch.no_grad():
        ref_layers = reference.get_intermediate_outputs(wav_t)
        ref_after = reference.student.get_intermediate_outputs(
            reference.feature_projection(reference.feature_extractor(wav_t)), before_residual=False
        )
        ref_codebooks = reference.get_codebooks(wav_t)
        ref_units = reference.get_codebooks(wav_t, onehot=True)
        feats = reference.feature_projection(reference.feature_extractor(wav_t))
        ref_teacher = reference.teacher.get_intermediate_outputs(feats)

    for ref, got in zip(ref_layers, ours.get_intermediate_outputs(wav_j), strict=True):
        assert scale_error(ref.numpy(), got) <= TOLERANCE
    for ref, got in zip(ref_after, ours.get_intermediate_outputs(wav_j, before_residual=False), strict=True):
        assert scale_error(ref.numpy(), got) <= TOLERANCE
    truncated = ours.get_intermediate_outputs(wav_j, num_layers=2)
    assert len(truncated) == 2
    assert scale_error(ref_layers[1].numpy(), truncated[1]) <= TOLERANCE

    our_probs = ours.get_codebooks(wav_j)
    our_onehot = ours.get_codebooks(wav_j, onehot=True)
    units = np.asarray(ours.units(wav_j))
    first = ours.num_layers - ours.num_codebooks
    for layer, (ref, got, ref_1h, got_1h) in enumerate(
        zip(ref_codebooks, our_probs, ref_units, our_onehot, strict=True)
    ):
        if layer < first:
            assert ref is None
            assert got is None
            continue
        ref_probs = ref.numpy().reshape(np.shape(got))  # the reference squeezes a batch of one
        assert np.max(np.abs(ref_probs - np.asarray(got))) <= 1e-5
        assert np.mean(ref_1h.numpy().reshape(np.shape(got_1h)) == np.asarray(got_1h)) > 0.999
        assert np.mean(ref_probs.argmax(-1) == units[layer - first]) > 0.999

    _, our_teacher, _ = ours.teacher.run_layers(jnp.asarray(feats.numpy()))
    ref_teacher_out = reference.teacher.get_intermediate_outputs(feats, before_residual=False)
    for ref, got in zip(ref_teacher_out, our_teacher, strict=True):
        assert scale_error(ref.numpy(), got) <= TOLERANCE
    for ref, got in zip(ref_teacher, ours.teacher.get_intermediate_outputs(jnp.asarray(feats.numpy())), strict=True):
        assert scale_error(ref.numpy(), got) <= TOLERANCE


def check_loss(reference, ours, waveforms, seed=0):
    frames = int(ours.frame_lengths(np.array([waveforms.shape[1]]))[0])
    indices = random_mask_indices(waveforms.shape[0], frames, int(0.6 * frames), seed)
    with torch.no_grad():
        ref_loss, ref_out = reference(torch.from_numpy(waveforms), mask_indices=torch.from_numpy(indices))
    mask = np.zeros((waveforms.shape[0], frames), bool)
    np.put_along_axis(mask, indices, values=True, axis=1)
    prediction = ours.masked_prediction(jnp.asarray(waveforms), jnp.asarray(mask))
    labels = ours.codebooks.assign(prediction.targets)
    metrics = objective_metrics(objective_sums(prediction.log_probs, labels, jnp.asarray(mask)))
    np.testing.assert_allclose(float(metrics.loss), float(ref_loss.mean()), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.target_ppl), float(ref_out["target_ppl"]), rtol=1e-4)
    np.testing.assert_allclose(float(metrics.pred_ppl), float(ref_out["pred_ppl"]), rtol=1e-4)


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.slow) if v == "spidr-small" else v for v in VARIANTS]
)
def test_small_variants_match_reference(tmp_path, variant):
    model_type, fields = VARIANTS[variant]
    reference, ours = convert(tmp_path, model_type, fields, seed=len(variant))
    waveforms = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
    check_all_outputs(reference, ours, waveforms)
    check_loss(reference, ours, waveforms)


@pytest.mark.parametrize("model_type", ["spidr", "dinosr"])
@pytest.mark.slow
def test_base_config_matches_reference(tmp_path, model_type):
    reference, ours = convert(tmp_path, model_type, {}, seed=11)
    waveforms = np.random.default_rng(1).standard_normal((2, 16000)).astype(np.float32)
    check_all_outputs(reference, ours, waveforms)
    check_loss(reference, ours, waveforms, seed=1)


@pytest.mark.parametrize("variant", ["spidr-small", "group-norm-conv-bias", "qkv-bias-pre-ln"])
@pytest.mark.slow
def test_padded_batch_equals_one_by_one(tmp_path, variant):
    model_type, fields = VARIANTS[variant]
    reference, ours = convert(tmp_path, model_type, fields, seed=3)
    rng = np.random.default_rng(2)
    lengths = [9000, 6100, 3333]
    clips = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    batch = np.zeros((len(clips), max(lengths)), np.float32)
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    frames = np.asarray(ours.frame_lengths(np.array(lengths)))
    batched = ours.get_intermediate_outputs(jnp.asarray(batch), jnp.asarray(lengths))
    batched_units = np.asarray(ours.units(jnp.asarray(batch), jnp.asarray(lengths)))
    for i, clip in enumerate(clips):
        alone = ours.get_intermediate_outputs(jnp.asarray(clip[None]))
        alone_units = np.asarray(ours.units(jnp.asarray(clip[None])))
        with torch.no_grad():
            ref_alone = reference.get_intermediate_outputs(torch.from_numpy(clip[None]))
        assert alone[0].shape[1] == frames[i]
        for layer, ref in enumerate(ref_alone):
            got = np.asarray(batched[layer])[i, : frames[i]]
            assert scale_error(np.asarray(alone[layer])[0], got) <= 1e-5
            assert scale_error(ref.numpy()[0], got) <= TOLERANCE
        np.testing.assert_array_equal(batched_units[:, i, : frames[i]], alone_units[:, 0])
