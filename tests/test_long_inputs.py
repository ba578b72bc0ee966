"""Long inputs: blocked attention and the chunked extractor equal the one-pass computation; long files in
extraction run alone and after the others, and a file that runs out of memory is a per-file failure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from spidr_jax.config import SpidRConfig
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.extract.inference import LONG_FILE_MULTIPLE, Batching, model_outputs, plan
from spidr_jax.models import ExtractorChunks, TransformerBlocks, build_model
from spidr_jax.models.blocked_attention import blocked_attention
from spidr_jax.models.chunked_extractor import receptive_field
from spidr_jax.models.layer_outputs import features_at
from tests.reference import SMALL as REFERENCE_SMALL

SMALL = REFERENCE_SMALL | {"encoder_num_layers": 2, "num_codebooks": 2}  # fewer layers: faster compilation
TOLERANCE = 1e-4  # max abs error relative to the output scale
SMALL_LIMITS = (
    TransformerBlocks(10, query_block=32, key_block=48, frame_block=100),
    ExtractorChunks(10, chunk_frames=37),
)


def scale_error(expected, got):
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    return np.max(np.abs(expected - got)) / max(np.max(np.abs(expected)), 1e-12)


def test_blocked_attention_equals_softmax_attention():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 203, 4, 16)), jnp.float32) for _ in range(3))
    mask = jnp.arange(203)[None, :] < jnp.array([203, 150, 7])[:, None]
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
    for query_block, key_block in [(32, 48), (64, 17), (256, 512)]:
        blocks = TransformerBlocks(0, query_block, key_block)
        got = jax.jit(lambda q, k, v, mask, blocks=blocks: blocked_attention(q, k, v, mask, blocks))(q, k, v, mask)
        assert scale_error(expected, got) <= 1e-5
    unmasked = blocked_attention(q, k, v, None, TransformerBlocks(0, 50, 40))
    assert scale_error(jax.nn.dot_product_attention(q, k, v), unmasked) <= 1e-5


def test_receptive_field_of_the_base_extractor():
    assert receptive_field(SpidRConfig().extractor_conv_layer_config) == (400, 320)


def model_outputs_of(model, waveforms, lengths):
    """Everything inference computes, in one compiled function."""

    @nnx.jit
    def run(model, waveforms, lengths):
        return {
            "extractor": model.feature_extractor(waveforms, lengths),
            "extractor_unpadded": model.feature_extractor(waveforms),
            "before_residual": model.get_intermediate_outputs(waveforms, lengths),
            "after_residual": model.get_intermediate_outputs(waveforms, lengths, before_residual=False),
            "units": model.units(waveforms, lengths),
        }

    return jax.tree.map(np.asarray, run(model, waveforms, lengths))


@pytest.mark.parametrize("mode", ["layer_norm", "group_norm"])
@pytest.mark.slow
def test_blocked_and_chunked_model_equals_one_pass(mode):
    cfg = SpidRConfig(**(SMALL | {"extractor_mode": mode, "extractor_conv_bias": True}))
    model = build_model(cfg, seed=1)
    rng = np.random.default_rng(0)
    lengths = np.array([40000, 23456, 31111])  # 1999, 1172 and 1555 frames
    waveforms = np.zeros((len(lengths), lengths.max()), np.float32)
    for i, n in enumerate(lengths):
        waveforms[i, :n] = rng.standard_normal(n)
    waveforms, lengths = jnp.asarray(waveforms), jnp.asarray(lengths)
    expected = model_outputs_of(model, waveforms, lengths)
    model.set_long_input_limits(*SMALL_LIMITS)
    got = model_outputs_of(model, waveforms, lengths)
    frames = np.asarray(model.frame_lengths(lengths))
    assert got["extractor"].shape == expected["extractor"].shape
    assert scale_error(expected["extractor_unpadded"], got["extractor_unpadded"]) <= TOLERANCE
    for i, n in enumerate(frames):
        assert scale_error(expected["extractor"][i, :n], got["extractor"][i, :n]) <= TOLERANCE
        for key in ("before_residual", "after_residual"):
            for layer_expected, layer_got in zip(expected[key], got[key], strict=True):
                assert scale_error(layer_expected[i, :n], layer_got[i, :n]) <= TOLERANCE
        assert np.mean(expected["units"][:, i, :n] == got["units"][:, i, :n]) > 0.999


def test_long_files_run_alone_after_the_others():
    rows = [ManifestRow(f"f{i}", f"f{i}.wav", n) for i, n in enumerate([16000, 5_000_000, 32000, 2_000_001, 48000])]
    batches, _ = plan(rows, Batching(long_seconds=100.0), num_devices=2)
    assert [batch.indices for batch in batches[-2:]] == [(3,), (1,)]  # shortest long file first
    assert all(batch.length % LONG_FILE_MULTIPLE == 0 and batch.batch_size == 2 for batch in batches[-2:])
    assert batches[-1].length >= 5_000_000
    assert sorted(i for batch in batches[:-2] for i in batch.indices) == [0, 2, 4]


@pytest.fixture(scope="module")
def small_model():
    model = build_model(SpidRConfig(**SMALL), seed=2)
    model.set_long_input_limits(*SMALL_LIMITS)
    return model


def write_files(tmp_path, lengths):
    rng = np.random.default_rng(1)
    rows = []
    for i, n in enumerate(lengths):
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="FLOAT")
        rows.append(ManifestRow(f"utt{i}", str(path), n))
    return rows


@pytest.mark.slow
def test_long_file_alone_equals_its_one_pass_output(tmp_path, small_model):
    rows = write_files(tmp_path, [8000, 36000])
    batching = Batching(long_seconds=2.0)
    results = list(model_outputs(small_model, rows, features_at(2), batching))
    assert [result.index for result in results][-1] == 1  # the long file, last and alone
    one_pass = build_model(SpidRConfig(**SMALL), seed=2)  # default limits: one pass at these lengths
    expected = {result.index: result.value for result in model_outputs(one_pass, rows, features_at(2))}
    for result in results:
        assert result.error is None
        assert scale_error(expected[result.index], result.value) <= TOLERANCE


@pytest.mark.slow
def test_next_batch_starts_before_the_outputs_of_the_last_are_handed_out(tmp_path, small_model):
    # The host traces, decodes and writes while the devices compute: each batch (traced as it starts) is started
    # before the outputs of the one before it are handed out. Three batches: each short file, then the long one.
    rows = write_files(tmp_path, [8000, 36000, 7000])
    real, events = features_at(1), []

    def recording(model, waveforms, lengths):
        events.append(("traced", waveforms.shape[1]))
        return real(model, waveforms, lengths)

    for result in model_outputs(small_model, rows, recording, Batching(long_seconds=2.0)):
        assert result.error is None
        events.append(("handed out", result.index))
    first, second, long = [length for kind, length in events if kind == "traced"]
    assert long == LONG_FILE_MULTIPLE
    assert events == [
        ("traced", first), ("traced", second), ("handed out", 0), ("traced", long), ("handed out", 2), ("handed out", 1)
    ]  # fmt: skip


def test_out_of_memory_is_a_per_file_failure(tmp_path, small_model):
    rows = write_files(tmp_path, [8000, 36000, 7000])
    real = features_at(1)

    def exhausting(model, waveforms, lengths):
        # Too much: the long file, or the two short ones together (then each alone fits).
        if waveforms.shape[1] > 20000 or waveforms.shape[0] > 1:
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 12 GiB")
        return real(model, waveforms, lengths)

    results = {r.index: r for r in model_outputs(small_model, rows, exhausting, Batching(long_seconds=2.0))}
    for index, samples in ((0, 8000), (2, 7000)):
        assert results[index].error is None
        assert results[index].value.shape[0] == int(small_model.frame_lengths(np.array([samples]))[0])
    assert results[1].value is None
    assert results[1].error == "out of memory (2 s of audio, alone)"

    def failing(*_):
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):  # other errors are not the file's fault
        list(model_outputs(small_model, rows, failing, Batching(long_seconds=2.0)))
