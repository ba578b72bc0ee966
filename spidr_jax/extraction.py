"""Feature and unit extraction over a manifest, written to disk resumably (see spidr_jax.extract for the CLI)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.data.manifest import read_manifest
from spidr_jax.inference import Batching, features_at, model_outputs, plan
from spidr_jax.models import DinoSR
from spidr_jax.pretrained import load_pretrained
from spidr_jax.progress import make_progress

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
    dtype: str = "float32"
    batching: Batching = field(default_factory=Batching)
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


def units_at(layer: int, model: DinoSR):  # noqa: ANN201
    """Units of a 1-based layer that has a codebook, (B, T) int32."""
    head = layer - (model.num_layers - model.num_codebooks) - 1
    return lambda m, waveforms, lengths: m.units(waveforms, lengths)[head]


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

    def is_done(self, fileid: str) -> bool:
        """Whether this file was written by an earlier run."""
        return fileid in self.done

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


def run_extraction(checkpoint: Path, manifest: Path, output: Path, options: ExtractionOptions) -> ExtractionSummary:
    """Extract the chosen layer for every row of the manifest not already done."""
    model = load_pretrained(checkpoint, dtype=jnp.dtype(options.dtype))
    check_layer(model, options.layer, units=options.units)
    rows = read_manifest(manifest)
    output.mkdir(parents=True, exist_ok=True)
    writer: UnitsWriter | FeatureWriter = UnitsWriter(output) if options.units else FeatureWriter(output)
    todo = [row for row in rows if not writer.is_done(row.fileid)]
    summary = ExtractionSummary(skipped=len(rows) - len(todo))
    summary.padding = plan(todo, options.batching, jax.local_device_count())[1]
    layer_output = (
        units_at(options.layer, model)
        if options.units
        else features_at(options.layer, before_residual=options.before_residual)
    )
    start = time.perf_counter()
    with make_progress(disable=not options.progress) as progress:
        task = progress.add_task("extracting", total=len(todo), status="")
        try:
            for done, result in enumerate(model_outputs(model, todo, layer_output, options.batching), start=1):
                row = todo[result.index]
                if result.error is not None:
                    summary.failed.append((row.location, result.error))
                    if options.stop_on_error:
                        break
                else:
                    writer.write(row.fileid, result.value)
                    summary.written += 1
                    summary.audio_seconds += result.seconds
                if done % 64 == 0:
                    writer.flush()
                progress.update(task, advance=1, status=f"{len(summary.failed)} failed")
        finally:
            writer.flush()
            writer.close()
    summary.elapsed = time.perf_counter() - start
    return summary
