"""The static batch shapes a training run compiles its step for, on a target with a given number of devices.

With a manifest they are the trainer's own buckets (`spidr_jax.data.pipeline.TrainingData`: the manifest is
scanned, `data.num_static_shapes` lengths chosen from its lengths, each with `data.max_batch_length // length` rows
per device). Without one, the lengths of the audio are unknown: the one shape every corpus of long recordings
reaches, `data.max_sample_size` (rounded down to the extractor's stride) with as many rows as the budget allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spidr_jax.config.run import Config
from spidr_jax.data.audio import SAMPLE_RATE
from spidr_jax.data.load_batch import FramesOf


@dataclass(frozen=True)
class BatchShape:
    """One static shape: `batch_per_device` rows of `samples` samples (`frames` frames) on each device."""

    batch_per_device: int
    samples: int
    frames: int
    num_devices: int

    @property
    def global_batch(self) -> int:
        """Rows of one step over all devices."""
        return self.batch_per_device * self.num_devices

    @property
    def samples_per_device(self) -> int:
        """Audio samples one device computes per step."""
        return self.batch_per_device * self.samples

    @property
    def audio_seconds_per_device(self) -> float:
        """Seconds of audio one device trains on per step."""
        return self.samples_per_device / SAMPLE_RATE

    @property
    def label(self) -> str:
        """`11 x 320000` (rows per device x samples)."""
        return f"{self.batch_per_device} x {self.samples}"


def step_shapes(cfg: Config, num_devices: int, *, progress: bool = False) -> tuple[list[BatchShape], str]:
    """(the run's shapes on `num_devices` devices, ascending by length; where they come from, in words)."""
    conv_layers = cfg.model.extractor_conv_layer_config
    if cfg.data.manifest:
        from spidr_jax.data.pipeline import TrainingData  # noqa: PLC0415 - Grain only when a manifest is read

        data = TrainingData(
            cfg.data, cfg.masking, cfg.model, seed=cfg.data.random_seed, num_data_shards=num_devices,
            process_index=0, process_count=1, progress=progress,
        )  # fmt: skip
        shapes = [
            BatchShape(bucket.batch_per_device, bucket.length, data.frames[bucket.length], num_devices)
            for bucket in data.buckets.buckets
        ]
        return shapes, f"the {len(shapes)} bucket shapes of {cfg.data.manifest}"
    stride = math.prod(layer[2] for layer in conv_layers)
    length = (cfg.data.max_sample_size // stride) * stride
    shape = BatchShape(cfg.data.max_batch_length // length, length, int(FramesOf(conv_layers)(length)), num_devices)
    return [shape], "data.max_sample_size crops at the data.max_batch_length budget (no data.manifest given)"


def largest_shape(shapes: list[BatchShape]) -> BatchShape:
    """The shape with the most samples per device (the longest among equals): what `--quick` checks."""
    return max(shapes, key=lambda shape: (shape.samples_per_device, shape.samples))
