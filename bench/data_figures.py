"""The suite's data figures: static shapes of a synthetic epoch, the audio they crop and pad, the input pipeline.

Part of `python -m bench.suite` (its buckets and pipeline parts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.step_speed import jax_model_config
from bench.workload import SAMPLE_RATE, librispeech_like_lengths, write_corpus

if TYPE_CHECKING:
    from spidr_jax.config import DataConfig, DinoSRConfig


def bucket_figures(rows: int, num_data_shards: int) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """Static shapes over one epoch of a synthetic manifest under the default data config; and those shapes."""
    from spidr_jax.config import DataConfig
    from spidr_jax.data.batch_plan import EpochPlan
    from spidr_jax.data.buckets import plan_buckets

    cfg = DataConfig()
    lengths = librispeech_like_lengths(rows)
    lengths = lengths[lengths >= max(cfg.min_sample_size, 400)]
    stats = plan_buckets(lengths, cfg, num_data_shards=num_data_shards, num_shapes=cfg.num_static_shapes)
    plan = EpochPlan(
        stats.assignment, stats.lengths, [b.global_batch for b in stats.buckets], seed=0, drop_last=cfg.drop_last
    )
    shapes = sorted({(len(rows_), stats.lengths[bucket]) for bucket, rows_ in plan.epoch(0)})
    figures = {
        "rows": len(lengths),
        "hours": float(lengths.sum() / SAMPLE_RATE / 3600),
        "batches_per_epoch": plan.batches_per_epoch,
        "shapes_in_epoch": len(shapes),
        "shapes": [list(shape) for shape in shapes],
        "crop_fraction": stats.crop_fraction,
        "cap_fraction": stats.cap_fraction,
        "padding_fraction": stats.padding_fraction,
    }
    # The same rows with data.enable_padding: each row padded up or cropped down, whichever wastes less.
    figures["padded"] = waste_figures(lengths, replace(cfg, enable_padding=True), num_data_shards)
    # Short prompts beside long files, with the demo's 2 shapes and the default 8, cropped and padded.
    prompts = prompts_and_long_files()
    figures["prompts_and_long_files"] = {
        f"{count} shapes, {'padded' if padding else 'cropped'}": waste_figures(
            prompts, replace(cfg, enable_padding=padding, num_static_shapes=count), num_data_shards
        )
        for count in (2, 8)
        for padding in (False, True)
    }
    return figures, shapes


def prompts_and_long_files(seed: int = 0) -> np.ndarray:
    """Lengths in samples: 400 prompts of 0.2-2 s beside 600 files lognormal around 20 s, within 2-60 s."""
    rng = np.random.default_rng(seed)
    seconds = np.concatenate([rng.uniform(0.2, 2, 400), rng.lognormal(np.log(20), 0.6, 600).clip(2, 60)])
    return (seconds * SAMPLE_RATE).astype(np.int64)


def waste_figures(lengths: np.ndarray, cfg: DataConfig, num_data_shards: int) -> dict[str, Any]:
    """The static lengths planned for `lengths` under `cfg`, and the audio they crop and pad."""
    from spidr_jax.data.buckets import plan_buckets

    stats = plan_buckets(lengths, cfg, num_data_shards=num_data_shards, num_shapes=cfg.num_static_shapes)
    return {
        "lengths": stats.lengths,
        "crop_fraction": stats.crop_fraction,
        "padding_fraction": stats.padding_fraction,
        "padded_of_audio": stats.padded_samples / stats.capped_samples,
    }


def pipeline_figures(args: argparse.Namespace, step_audio_per_s: float | None) -> dict[str, Any]:
    """Audio seconds per second that TrainingData delivers (decoded, normalized, cropped, masked), by worker count."""
    model_cfg = jax_model_config(args)
    out: dict[str, Any] = {"files": args.corpus_files, "by_workers": []}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_corpus(Path(tmp), librispeech_like_lengths(args.corpus_files), np.random.default_rng(0))
        for workers in args.workers:
            try:
                entry = pipeline_rate(args, manifest, model_cfg, workers)
            except Exception as error:  # noqa: BLE001 - keep the other worker counts' figures
                entry = {"num_workers": workers, "error": f"{type(error).__name__}: {error}"}
                print(f"  pipeline, {workers} workers: failed: {entry['error']}", flush=True)
            if step_audio_per_s and "audio_s_per_s" in entry:
                entry["vs_step"] = entry["audio_s_per_s"] / step_audio_per_s
            out["by_workers"].append(entry)
    return out


def pipeline_rate(args: argparse.Namespace, manifest: Path, model_cfg: DinoSRConfig, workers: int) -> dict[str, Any]:
    """Seconds to the first batch and audio s/s over the next `args.pipeline_batches` batches, `workers` workers."""
    from spidr_jax.config import DataConfig, MaskingConfig
    from spidr_jax.data.pipeline import TrainingData

    data = TrainingData(
        DataConfig(manifest=str(manifest), num_workers=workers),
        MaskingConfig(),
        model_cfg,
        seed=0,
        num_data_shards=1,
        process_index=0,
        process_count=1,
        progress=False,
    )
    start = time.perf_counter()
    samples = 0
    with data.iterator(0, args.pipeline_batches + 1) as batches:
        _, first = next(batches)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        for _, batch in batches:
            samples += batch["waveforms"].size
    elapsed = time.perf_counter() - start
    rate = samples / SAMPLE_RATE / elapsed
    entry = {"num_workers": workers, "first_batch_s": first_s, "batches": args.pipeline_batches}
    entry |= {"audio_s_per_s": rate, "batch_shape": list(first["waveforms"].shape)}
    print(f"  pipeline, {workers} workers: {rate:.0f} audio s/s", flush=True)
    return entry
