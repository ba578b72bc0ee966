"""Feature and unit extraction over a manifest: static-shape padded batches, all local devices, resumable output."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from spidr_jax.data.audio import SAMPLE_RATE, AudioError, normalize, read_audio
from spidr_jax.data.manifest import ManifestRow, read_manifest
from spidr_jax.data.padded_batches import PaddedBatch, padding_fraction, plan_padded_batches
from spidr_jax.data.scan import bounded_map
from spidr_jax.models import DinoSR
from spidr_jax.pretrained import load_pretrained
from spidr_jax.progress import make_progress
from spidr_jax.sharding import data_mesh

UNITS_FILE = "units.jsonl"


class ExtractionError(ValueError):
    """Bad extraction request (layer out of range, unusable output path)."""


@dataclass(frozen=True)
class ExtractionOptions:
    """What to extract and how."""

    layer: int
    units: bool = False
    before_residual: bool = True
    stop_on_error: bool = False
    normalize: bool = True
    dtype: str = "float32"
    batch_seconds: float = 200.0
    max_batch_size: int = 64
    progress: bool = True


@dataclass
class ExtractionSummary:
    """Counts for the closing line."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0
    padding: float = 0.0

    def describe(self) -> str:
        """One-paragraph summary, with the failed files listed."""
        speed = self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.written} written, {self.skipped} already done, {len(self.failed)} failed; "
            f"{self.audio_seconds:.1f} s of audio in {self.elapsed:.1f} s ({speed:.1f} audio s/s), "
            f"{100 * self.padding:.1f}% padding"
        )
        return "\n".join([text, *(f"  failed: {path}: {reason}" for path, reason in self.failed)])


def check_layer(model: DinoSR, layer: int, *, units: bool) -> None:
    """Raise ExtractionError naming the valid layers."""
    first_unit_layer = model.num_layers - model.num_codebooks + 1
    if units and not first_unit_layer <= layer <= model.num_layers:
        raise ExtractionError(
            f"--layer {layer} has no codebook predictions; "
            f"units exist for layers {first_unit_layer}..{model.num_layers}"
        )
    if not 1 <= layer <= model.num_layers:
        raise ExtractionError(f"--layer must be between 1 and {model.num_layers}, got {layer}")


def layer_function(model: DinoSR, options: ExtractionOptions):  # noqa: ANN201
    """A jitted (state, waveforms, lengths) -> (B, T, D) features or (B, T) units of the chosen layer."""
    graphdef, state = nnx.split(model)
    head = options.layer - (model.num_layers - model.num_codebooks) - 1

    @jax.jit
    def run(state: nnx.State, waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, state)
        if options.units:
            return m.units(waveforms, lengths)[head]
        outputs = m.get_intermediate_outputs(
            waveforms, lengths, num_layers=options.layer, before_residual=options.before_residual
        )
        return outputs[options.layer - 1].astype(jnp.float32)

    return run, state


class UnitsWriter:
    """Appends one JSON line per file; on resume, keeps the complete lines already there."""

    def __init__(self, output: Path) -> None:
        self.path = output / UNITS_FILE
        self.done: set[str] = set()
        if self.path.exists():
            good = 0
            with self.path.open("rb") as f:
                for line in f:
                    try:
                        self.done.add(json.loads(line)["fileid"])
                    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                        break  # a line cut by an interruption: drop it and what follows
                    good += len(line)
            with self.path.open("r+b") as f:
                f.truncate(good)
        self.file = self.path.open("a", encoding="utf-8")

    def write(self, fileid: str, values: np.ndarray) -> None:
        """Write one file's units."""
        self.file.write(json.dumps({"fileid": fileid, "units": values.tolist()}) + "\n")

    def flush(self) -> None:
        """Make what was written durable."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class FeatureWriter:
    """One .npy per file, written to a temporary name and renamed, so a file that exists is complete."""

    def __init__(self, output: Path) -> None:
        self.output = output

    def path(self, fileid: str) -> Path:
        """Where a file's features go (fileids with '/' become subfolders)."""
        target = (self.output / f"{fileid}.npy").resolve()
        if self.output.resolve() not in target.parents:
            raise ExtractionError(f"fileid {fileid!r} points outside the output directory")
        return target

    def is_done(self, fileid: str) -> bool:
        """Whether this file was written by an earlier run."""
        return self.path(fileid).exists()

    def write(self, fileid: str, values: np.ndarray) -> None:
        """Write one file's features atomically."""
        target = self.path(fileid)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb") as f:
            np.save(f, values.astype(np.float32))
        tmp.replace(target)

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to close."""


def load_batch(
    batch: PaddedBatch, rows: list[ManifestRow], *, normalize_audio: bool
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Decode and pad one batch: (waveforms (B, S), lengths (B,), failures [(row index, reason)])."""
    waveforms = np.zeros((batch.batch_size, batch.length), np.float32)
    lengths = np.full((batch.batch_size,), batch.length, np.int32)  # filler rows: full length, ignored
    failures = []
    for slot, index in enumerate(batch.indices):
        try:
            audio = read_audio(rows[index])
        except AudioError as error:
            failures.append((index, error.reason))
            lengths[slot] = 0
            continue
        if len(audio) > batch.length:  # the batch was planned from the manifest's lengths
            failures.append((index, f"has {len(audio)} samples, the manifest says {rows[index].num_samples}"))
            lengths[slot] = 0
            continue
        waveforms[slot, : len(audio)] = normalize(audio) if normalize_audio else audio
        lengths[slot] = len(audio)
    return waveforms, lengths, failures


def run_extraction(checkpoint: Path, manifest: Path, output: Path, options: ExtractionOptions) -> ExtractionSummary:
    """Extract the chosen layer for every row of the manifest not already done."""
    model = load_pretrained(checkpoint, dtype=jnp.dtype(options.dtype))
    check_layer(model, options.layer, units=options.units)
    rows = read_manifest(manifest)
    output.mkdir(parents=True, exist_ok=True)
    writer: UnitsWriter | FeatureWriter = UnitsWriter(output) if options.units else FeatureWriter(output)
    is_done = (lambda r: r.fileid in writer.done) if options.units else (lambda r: writer.is_done(r.fileid))
    todo = [row for row in rows if not is_done(row)]
    summary = ExtractionSummary(skipped=len(rows) - len(todo))

    mesh = data_mesh()
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    run, state = layer_function(model, options)
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    lengths = [row.num_samples for row in todo]
    batches = plan_padded_batches(
        lengths,
        max_batch_samples=int(options.batch_seconds * SAMPLE_RATE),
        max_batch_size=options.max_batch_size,
        batch_multiple=mesh.size,
    )
    summary.padding = padding_fraction(lengths, batches)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool, make_progress(disable=not options.progress) as progress:
        task = progress.add_task("extracting", total=len(todo), status="")
        load = lambda b: load_batch(b, todo, normalize_audio=options.normalize)  # noqa: E731
        try:
            for batch, (waveforms, wav_lengths, failures) in zip(
                batches, bounded_map(load, batches, pool, window=3), strict=True
            ):
                for index, reason in failures:
                    summary.failed.append((todo[index].location, reason))
                if failures and options.stop_on_error:
                    break
                result = np.asarray(run(state, jax.device_put(waveforms, batch_sharding), wav_lengths))
                frames = np.asarray(model.frame_lengths(wav_lengths))
                for slot, index in enumerate(batch.indices):
                    if wav_lengths[slot] > 0:
                        writer.write(todo[index].fileid, result[slot, : frames[slot]])
                        summary.written += 1
                        summary.audio_seconds += wav_lengths[slot] / SAMPLE_RATE
                writer.flush()
                progress.update(task, advance=len(batch.indices), status=f"{len(summary.failed)} failed")
        finally:
            writer.close()
    summary.elapsed = time.perf_counter() - start
    return summary
