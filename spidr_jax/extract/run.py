"""Feature and unit extraction over a manifest, written to disk resumably (the command line is `cli`).

One process or several (each takes a share of the manifest, see `processes`); the output directory records its
settings (`settings`), is held by one extraction at a time (`extraction.lock`) and holds only complete files
(`units_file`, `features_file`; `unit_formats` renders the units for the next tools at the end); the model runs
over padded batches (`inference`).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.data.manifest import ManifestError, ManifestRow, read_manifest
from spidr_jax.data.scan import at_model_rate
from spidr_jax.errors import UserError
from spidr_jax.extract.features_file import FeatureWriter, tree_names
from spidr_jax.extract.inference import Batching, model_outputs, plan
from spidr_jax.extract.processes import Processes, split_rows
from spidr_jax.extract.settings import ExtractionError, ExtractionSettings, check_output_location, prepare_output
from spidr_jax.extract.unit_formats import render
from spidr_jax.extract.units_file import UnitsWriter, deduplicate_units, merge_shards, order_units
from spidr_jax.models import DinoSR
from spidr_jax.models.attention_kernel import attention_kernel
from spidr_jax.models.layer_outputs import OutputFunction, check_layer, features_at, kmeans_units_at, units_at
from spidr_jax.pretrained import checkpoint_kind, model_from_tree, read_pretrained
from spidr_jax.progress import make_progress
from spidr_jax.storage.atomic import make_directory
from spidr_jax.storage.kmeans_file import KMeansFile, read_kmeans_file
from spidr_jax.storage.run_lock import RunLock

LOCK_FILE = "extraction.lock"  # held by process 0 for the run: one extraction per output directory


@dataclass(frozen=True)
class ExtractionOptions:
    """What to extract and how."""

    layer: int
    units: bool = False
    before_residual: bool = True
    stop_on_error: bool = False
    dtype: str = "float32"
    attention: str = "auto"  # the attention kernel (spidr_jax.models.attention_kernel); same numbers
    batching: Batching = field(default_factory=Batching)
    progress: bool = True
    overwrite: bool = False  # delete an earlier extraction's outputs (other settings allowed)
    step: int | None = None  # a training workdir's checkpoint (default: its newest intact one)
    units_format: str = "jsonl"  # and the files of `unit_formats` rendered from units.jsonl at the end
    dedup: bool = False  # units: runs of one unit collapsed, with their durations
    layout: str = "flat"  # features: OUT/<fileid>.npy, or "tree": the audio's folders below their common root
    feature_format: str = "npy"  # or "pt" (torch.save, what fastabx reads)
    kmeans: Path | None = None  # units: the nearest centroid of this km.npz rather than the codebook's argmax


@dataclass
class ExtractionSummary:
    """Counts for the closing line (of this process)."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0
    padding: float = 0.0
    merged: int = 0  # units records folded from process shards into units.jsonl
    rendered: list[Path] = field(default_factory=list)  # the files of --units-format
    total_written: int = 0  # over all processes
    total_failed: int = 0

    def describe(self) -> str:
        """One-paragraph summary, with the failed files listed."""
        speed = self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.written} written, {self.skipped} already done, {len(self.failed)} failed; "
            f"{self.audio_seconds:.1f} s of audio in {self.elapsed:.1f} s ({speed:.1f} audio s/s), "
            f"{100 * self.padding:.1f}% padding"
        )
        return "\n".join([text, *(f"  failed: {path}: {reason}" for path, reason in self.failed)])


def check_unique(rows: list[ManifestRow], manifest: Path) -> None:
    """Raise ManifestError naming the first fileid that several rows share (outputs are named by fileid)."""
    positions: dict[str, list[int]] = defaultdict(list)
    for number, row in enumerate(rows, start=1):
        positions[row.fileid].append(number)
    for fileid, numbers in positions.items():
        if len(numbers) > 1:
            where = ", ".join(f"{n} ({rows[n - 1].location})" for n in numbers[:4])
            raise ManifestError(manifest, f"fileid {fileid!r} is on {len(numbers)} rows: data rows {where}")


def load_checkpoint(path: Path, dtype: str, step: int | None = None) -> tuple[DinoSR, str, int]:
    """(model, "converted model" | "training workdir", step) of a converted directory or a workdir's checkpoint.

    A workdir's checkpoint at `step` (its newest intact one by default), without the optimizer state; and no teacher
    (inference runs the student): half of the model's weights.
    """
    cfg, tree = read_pretrained(path, teacher=False, step=step)
    step = int(np.asarray(tree["current_step"]))
    return model_from_tree(cfg, tree, dtype=jnp.dtype(dtype)), checkpoint_kind(path), step


def settings_of(
    checkpoint: Path, model: DinoSR, kind: str, step: int, options: ExtractionOptions
) -> ExtractionSettings:
    """The settings recorded in (and compared with) the output directory."""
    return ExtractionSettings(
        checkpoint=str(checkpoint.resolve()),
        checkpoint_kind=kind,
        checkpoint_step=step,
        model_type=model.config.model_type,
        layer=options.layer,
        output="units" if options.units else "features",
        after_residual=not options.before_residual and not options.units,
        normalize=options.batching.normalize,
        dtype=options.dtype,
        kmeans=str(options.kmeans.resolve()) if options.kmeans else "",
        units_format=options.units_format if options.units else "jsonl",
        dedup=options.dedup and options.units,
        layout=options.layout if not options.units else "flat",
        feature_format=options.feature_format if not options.units else "npy",
    )


def log(processes: Processes, message: str) -> None:
    """One line on stderr, prefixed with the process when there are several."""
    print(f"{processes.prefix()}{message}", file=sys.stderr, flush=True)


def prepare(
    output: Path, settings: ExtractionSettings, options: ExtractionOptions, processes: Processes
) -> RunLock | None:
    """Process 0 takes the output's lock, checks and records the settings; every process learns whether that worked.

    Returns the lock (on process 0) for the caller to release at the end.
    """
    failure: UserError | None = None
    lock = None
    if processes.is_first:
        print(f"checkpoint: {settings.describe_checkpoint()}", file=sys.stderr, flush=True)
        try:
            check_output_location(output)
            make_directory(output)  # a place that cannot be written: one line naming it, before the lock is tried
            lock = RunLock(output, LOCK_FILE, what="extraction", instead="another --output").__enter__()
            removed = prepare_output(output, settings, overwrite=options.overwrite)
            if removed:
                log(processes, f"--overwrite: deleted {removed} files of an earlier extraction in {output}")
            duplicates = deduplicate_units(output)
            if duplicates:
                log(processes, f"{output}: removed {duplicates} repeated units records (each fileid is kept once)")
        except UserError as error:
            failure = error
            if lock is not None:
                lock.release()
                lock = None
    if not processes.all_ok(failure is None)[0]:
        raise failure or ExtractionError(f"{output}: process 0 could not prepare the output directory")
    return lock


def run_extraction(
    checkpoint: Path,
    manifest: Path,
    output: Path,
    options: ExtractionOptions,
    processes: Processes = Processes(),  # noqa: B008 - frozen, a single process
) -> ExtractionSummary:
    """Extract the chosen layer for this process's share of the manifest, skipping what is already written."""
    rows = read_manifest(manifest)
    check_unique(rows, manifest)
    model, kind, step = load_checkpoint(checkpoint.resolve(), options.dtype, options.step)  # Orbax: absolute paths
    check_layer(model.config, options.layer, units=options.units and options.kmeans is None)
    kmeans = None
    if options.kmeans is not None:
        kmeans = read_kmeans_file(options.kmeans, dim=model.config.encoder_embed_dim, layer=options.layer)
    kernel = attention_kernel(options.attention, jax.default_backend(), jnp.dtype(options.dtype), field="--attention")
    model.set_attention_kernel(kernel)
    lock = prepare(output, settings_of(checkpoint, model, kind, step, options), options, processes)
    try:
        summary = ExtractionSummary()
        failure: UserError | None = None
        try:
            share, resampled = at_model_rate([rows[i] for i in split_rows(rows, processes.count)[processes.index]])
            if resampled:
                log(processes, f"resampled to 16 kHz mono as they are read: {resampled} files")
            names = tree_names(rows) if options.layout == "tree" else None  # of the whole manifest: one root
            layer_output = output_function(model, options, kmeans)
            extract_share(model, share, output, layer_output, options=options, processes=processes, summary=summary,
                          names=names)  # fmt: skip
        except UserError as error:  # every process still reaches the barrier below
            failure = error
        if processes.count > 1:
            log(processes, "waiting for the other processes")
        all_ok = processes.all_ok(failure is None)
        summary.total_written, summary.total_failed = processes.totals(summary.written, len(summary.failed))
        if options.units and processes.is_first and failure is None:
            summary.merged = merge_shards(output)
            order_units(output, [row.fileid for row in rows])  # the manifest's order, whatever the processes did
            paths = {row.fileid: row.location for row in rows}
            num_units = kmeans.k if kmeans is not None else model.config.codebook_size
            summary.rendered = render(output, options.units_format, num_units=num_units, paths=paths)
    finally:
        if lock is not None:
            lock.release()
    if failure is not None:
        raise failure
    if not all(all_ok) and processes.is_first:
        failed = [str(i) for i, ok in enumerate(all_ok) if not ok]
        log(processes, f"process(es) {', '.join(failed)} stopped on an error (see their output); rerun to resume")
    return summary


def output_function(model: DinoSR, options: ExtractionOptions, kmeans: KMeansFile | None) -> OutputFunction:
    """What is computed for each file: features, codebook units, or k-means units of the layer."""
    if kmeans is not None:
        return kmeans_units_at(options.layer, kmeans.centroids)
    if options.units:
        return units_at(options.layer, model.config)
    return features_at(options.layer, before_residual=options.before_residual)


def extract_share(
    model: DinoSR,
    rows: list[ManifestRow],
    output: Path,
    layer_output: OutputFunction,
    *,
    options: ExtractionOptions,
    processes: Processes,
    summary: ExtractionSummary,
    names: dict[str, str] | None = None,
) -> None:
    """Extract the rows not written yet into `output`, counting into `summary` (`names`: the features' files)."""
    if options.units:
        writer: UnitsWriter | FeatureWriter = UnitsWriter(output, processes.index, processes.count, dedup=options.dedup)
    else:
        writer = FeatureWriter(output, names=names, feature_format=options.feature_format)
    todo = [row for row in rows if not writer.is_done(row.fileid)]
    summary.skipped = len(rows) - len(todo)
    # An empty file (or a manifest saying so) has no frames: a failure of that file, not of the run.
    summary.failed.extend((row.location, "num_samples is 0 in the manifest") for row in todo if row.num_samples == 0)
    todo = [] if summary.failed and options.stop_on_error else [row for row in todo if row.num_samples > 0]
    summary.padding = plan(todo, options.batching, jax.local_device_count())[1]
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
            writer.flush()
        finally:
            writer.close()
    summary.elapsed = time.perf_counter() - start
