"""Run a model over every file of a manifest: whole utterances in a few static padded shapes, on all devices.

`model_outputs` yields one array per file (its valid frames only), or the reason a file could not be read or
computed. It serves extraction, unit-quality evaluation and the end-of-training report alike; what is computed
for each batch is an output function of `spidr_jax.models.layer_outputs`.

Files longer than `Batching.long_seconds` run alone (a batch of one, after all the others), where the model's
blocked attention and chunked extractor bound the memory; a file that still exhausts the memory of the device is
reported as failed, like an unreadable one, and the others go on.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, normalize, read_audio
from spidr_jax.data.manifest import ManifestRow
from spidr_jax.data.padded_batches import PaddedBatch, padding_fraction, plan_padded_batches
from spidr_jax.data.scan import bounded_map
from spidr_jax.models import DinoSR
from spidr_jax.models.extractor import receptive_field
from spidr_jax.models.layer_outputs import OutputFunction
from spidr_jax.sharding import data_mesh


@dataclass(frozen=True)
class Batching:
    """How files are grouped into padded batches."""

    normalize: bool = True  # per-utterance standardization, as the models were trained
    batch_seconds: float = 200.0  # audio per batch over all devices
    max_batch_size: int = 64
    max_shapes: int = 8  # padded lengths, i.e. compilations
    long_seconds: float = 120.0  # longer files run alone, after the others
    resample: bool = False  # other rates and channels to 16 kHz mono (rows' lengths from `scan.at_model_rate`)


LONG_FILE_MULTIPLE = 5 * SAMPLE_RATE  # long files are padded to a multiple of 5 s, so similar ones share a shape


DEFAULT_BATCHING = Batching()
BATCHES_AHEAD = 1  # batches started on the devices before the oldest one's outputs are handed out

R = TypeVar("R")


class FileOutput(NamedTuple):
    """The output of one manifest row (frames of the file only), or why there is none."""

    index: int
    value: np.ndarray | None
    error: str | None
    seconds: float


@functools.cache  # one jitted function per (model structure, output): evaluations during training reuse it
def compiled_output(graphdef: nnx.GraphDef, output: OutputFunction) -> Callable[..., jax.Array]:
    """Jitted (state, waveforms, lengths) -> output of the model `graphdef` describes."""
    return jax.jit(lambda state, waveforms, lengths: output(nnx.merge(graphdef, state), waveforms, lengths))


def load_batch(
    batch: PaddedBatch,
    rows: list[ManifestRow],
    *,
    normalize_audio: bool,
    min_samples: int = 1,
    resample: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decode and zero-pad one batch: (waveforms (B, S), lengths (B,), {row index: failure reason}).

    A file shorter than `min_samples` (the model's receptive field: one frame) fails too.
    """
    waveforms = np.zeros((batch.batch_size, batch.length), np.float32)
    lengths = np.full((batch.batch_size,), batch.length, np.int32)  # filler rows: full length, ignored
    failures = {}
    for slot, index in enumerate(batch.indices):
        try:
            audio = read_audio(rows[index], resample=resample)
        except AudioError as error:
            failures[index], lengths[slot] = error.reason, 0
            continue
        if len(audio) > batch.length:  # the batch was planned from the manifest's lengths
            failures[index] = f"has {len(audio)} samples, the manifest says {rows[index].num_samples}"
        elif len(audio) < min_samples:
            failures[index] = f"{len(audio)} samples, shorter than the model's minimum of {min_samples} (one frame)"
        if index in failures:
            lengths[slot] = 0
            continue
        waveforms[slot, : len(audio)] = normalize(audio) if normalize_audio else audio
        lengths[slot] = len(audio)
    return waveforms, lengths, failures


def plan(rows: list[ManifestRow], batching: Batching, num_devices: int) -> tuple[list[PaddedBatch], float]:
    """The padded batches for these rows, and the share of computed samples that is padding.

    Rows up to `batching.long_seconds` come first, longest first (memory problems show up early); longer rows
    follow one per batch, shortest first, so a file too long for the machine holds back nothing else.
    """
    lengths = [row.num_samples for row in rows]
    limit = batching.long_seconds * SAMPLE_RATE
    short = [i for i, n in enumerate(lengths) if n <= limit]
    batches = [
        PaddedBatch(batch.length, batch.batch_size, tuple(short[i] for i in batch.indices))
        for batch in plan_padded_batches(
            [lengths[i] for i in short],
            max_batch_samples=int(batching.batch_seconds * SAMPLE_RATE),
            max_batch_size=batching.max_batch_size,
            batch_multiple=num_devices,
            max_shapes=batching.max_shapes,
        )
    ]
    for index in sorted((i for i, n in enumerate(lengths) if n > limit), key=lambda i: lengths[i]):
        padded = -(-lengths[index] // LONG_FILE_MULTIPLE) * LONG_FILE_MULTIPLE
        batches.append(PaddedBatch(padded, num_devices, (index,)))
    return batches, padding_fraction(lengths, batches)


def out_of_memory(error: Exception) -> bool:
    """Whether a failed computation ran out of memory (which a smaller input may not)."""
    return isinstance(error, MemoryError) or (
        isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
    )


def none_if_out_of_memory(step: Callable[[], R]) -> R | None:
    """`step()`, or None when the devices ran out of memory for it (other errors propagate)."""
    try:
        return step()
    except (MemoryError, jax.errors.JaxRuntimeError) as error:
        if not out_of_memory(error):
            raise
        return None


class Started(NamedTuple):
    """A batch whose computation was started: its inputs, and its outputs still on the devices (None: no memory)."""

    batch: PaddedBatch
    waveforms: np.ndarray
    lengths: np.ndarray
    failures: dict[int, str]  # row index -> why the file could not be read
    outputs: jax.Array | None


class BatchRunner:
    """Runs a model's output function on padded batches over all local devices (the model replicated)."""

    def __init__(self, model: DinoSR, output: OutputFunction) -> None:
        self.mesh = data_mesh(jax.local_devices())
        graphdef, state = nnx.split(model)
        self.state = jax.device_put(state, NamedSharding(self.mesh, PartitionSpec()))
        self.run = compiled_output(graphdef, output)
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.last_started: jax.Array | None = None

    def start(self, waveforms: np.ndarray, lengths: np.ndarray) -> jax.Array | None:
        """The batch's outputs, still being computed (dispatch is asynchronous); None: too little memory to start."""
        self.last_started = none_if_out_of_memory(
            lambda: self.run(self.state, jax.device_put(waveforms, self.batch_sharding), lengths)
        )
        return self.last_started

    @staticmethod
    def fetch(outputs: jax.Array | None) -> np.ndarray | None:
        """Started outputs on the host, once computed; None when the devices ran out of memory computing them."""
        return None if outputs is None else none_if_out_of_memory(lambda: np.asarray(outputs))

    def rows(self, started: Started, slots: list[int]) -> dict[int, np.ndarray | None]:
        """The output row of each of `slots`, None where the devices ran out of memory even for that file alone.

        A batch too big together is computed again a file at a time (with full-length filler rows for the other
        devices).
        """
        values = self.fetch(started.outputs)
        if values is not None:
            return {slot: values[slot] for slot in slots}
        if len(slots) <= 1:
            return dict.fromkeys(slots)
        # The batches started after this one finish first: each file alone then has the memory the batch had.
        none_if_out_of_memory(lambda: jax.block_until_ready(self.last_started))
        num_devices, length = self.mesh.size, started.waveforms.shape[1]
        results = {}
        for slot in slots:
            single = np.zeros((num_devices, length), np.float32)
            single[0] = started.waveforms[slot]
            single_lengths = np.full((num_devices,), length, np.int32)
            single_lengths[0] = started.lengths[slot]
            values = self.fetch(self.start(single, single_lengths))
            results[slot] = None if values is None else values[0]
        return results


def file_outputs(model: DinoSR, runner: BatchRunner, started: Started) -> Iterator[FileOutput]:
    """One FileOutput per row of a started batch, waiting for its computation."""
    batch, lengths, failures = started.batch, started.lengths, started.failures
    results = runner.rows(started, [slot for slot, index in enumerate(batch.indices) if index not in failures])
    frames = np.asarray(model.frame_lengths(lengths))
    for slot, index in enumerate(batch.indices):
        seconds = lengths[slot] / SAMPLE_RATE
        if index in failures:
            yield FileOutput(index, None, failures[index], 0.0)
        elif results[slot] is None:
            yield FileOutput(index, None, f"out of memory ({seconds:.0f} s of audio, alone)", 0.0)
        else:
            yield FileOutput(index, results[slot][: frames[slot]], None, seconds)


def model_outputs(
    model: DinoSR,
    rows: list[ManifestRow],
    output: OutputFunction,
    batching: Batching = DEFAULT_BATCHING,
    batches: list[PaddedBatch] | None = None,
) -> Iterator[FileOutput]:
    """One FileOutput per row (in batch order, longest first), or per row of `batches` (a part of `plan`'s).

    Decoding runs ahead in threads, and each batch is started on the devices before the previous one's outputs
    are copied back and handed out: the host's work (decoding, tracing a new shape, writing the outputs) overlaps
    the devices' computation.
    """
    runner = BatchRunner(model, output)
    if batches is None:
        batches, _ = plan(rows, batching, runner.mesh.size)

    min_samples = receptive_field(model.config.extractor_conv_layer_config)

    def load(batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        return load_batch(
            batch, rows, normalize_audio=batching.normalize, min_samples=min_samples, resample=batching.resample
        )

    in_flight: collections.deque[Started] = collections.deque()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for batch, (waveforms, lengths, failures) in zip(
            batches, bounded_map(load, batches, pool, window=3), strict=True
        ):
            in_flight.append(Started(batch, waveforms, lengths, failures, runner.start(waveforms, lengths)))
            if len(in_flight) > BATCHES_AHEAD:
                yield from file_outputs(model, runner, in_flight.popleft())
        while in_flight:
            yield from file_outputs(model, runner, in_flight.popleft())
