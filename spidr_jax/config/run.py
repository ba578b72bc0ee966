"""Training configuration sections, with the reference's field names and defaults.

RunConfig, DataConfig, OptimizerConfig and MaskingConfig, plus the full `Config`. Fields marked "accepted for
compatibility" are read from reference TOML files but have no effect here; the README lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from spidr_jax.config.model import DinoSRConfig, ModelType, SpidRConfig

MaskingStrategy = Literal["static", "uniform", "normal", "poisson"]
Scheduler = Literal["tristage", "cosine", "rsqrt", "constant"]


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives and how often it logs and saves."""

    workdir: str = ""
    wandb_project: str = "spidr_jax"  # accepted for compatibility; names the TensorBoard run
    wandb_name: str = "run"  # accepted for compatibility; names the TensorBoard run
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"  # accepted for compatibility
    random_seed: int = 0
    use_deterministic: bool = False
    log_interval: int = 200
    save_interval: int = 2_500
    init_ckpt: str | None = None
    compile: bool = True  # accepted for compatibility: the step is always compiled
    keep_latest: int = -1
    model_type: ModelType = "dinosr"
    slurm_validation: dict | None = None  # accepted for compatibility: validation runs in-process
    # Not in the reference: how the transformer layers run (spidr_jax/models/layer_stack.py); same numbers either
    # way. "scan" compiles one layer body instead of every layer; "auto" scans except on CPUs, where both compile
    # in the same time and unrolled layers step faster. `remat` trades activation memory for recomputation.
    layer_loop: Literal["auto", "scan", "unroll"] = "auto"
    remat: Literal["none", "layer", "dots"] = "none"
    # Not in the reference: the kernel of attention without dropout (spidr_jax/models/attention_kernel.py);
    # "cudnn" needs an NVIDIA GPU and bf16/fp16, "auto" is XLA's.
    attention: Literal["auto", "xla", "cudnn"] = "auto"
    # Not in the reference: a restart whose data, seed or optimizer settings differ from the run's last start is
    # refused (by default each change is printed, and the run goes on with the new settings).
    strict_resume: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Manifest, length limits and the per-device token budget."""

    manifest: str = ""
    enable_padding: bool = False
    rand_crop: bool = True
    normalize: bool = True
    num_buckets: int = 1000  # accepted for compatibility: batches come in `num_static_shapes` shapes instead
    min_sample_size: int = 2_000
    max_sample_size: int = 320_000
    max_batch_length: int = 3_800_000
    drop_last: bool = False
    num_workers: int = 10
    pin_memory: bool = True  # accepted for compatibility
    prefetch_factor: int = 2
    persistent_workers: bool = True  # accepted for compatibility
    random_seed: int = 0
    bucket_method: Literal["uniform", "percentile"] = "uniform"
    alignments_path: str | None = None
    num_static_shapes: int = 8  # not in the reference: how many (batch, samples) shapes the step compiles
    # Not in the reference: a row that fails to decode in training is replaced by another row of its bucket;
    # the run stops when more than this fraction of the rows it loaded failed.
    max_bad_fraction: float = 0.01
    verify_audio: bool = False  # not in the reference: decode every file during the scan, not only headers
    # Not in the reference: audio at other sample rates or with several channels is averaged to mono and resampled
    # to 16 kHz with soxr as it is loaded (without it, such files are left out as unusable).
    resample: bool = False


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW, gradient clipping, precision and the learning-rate schedule."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    eps: float = 1e-6
    max_norm: float = 10.0
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.01
    max_steps: int = 400_000
    warmup_steps: int = 12_000
    hold_steps: int = 188_000
    decay_steps: int = 200_000
    rsqrt_timescale: int = 10_000
    rsqrt_shift: int = 0
    scheduler: Scheduler = "tristage"
    exclude_from_optimizer: tuple[str, ...] = ("teacher",)
    to_freeze: tuple[str, ...] = ("feature_extractor", "feature_projection")

    @property
    def mixed_precision(self) -> bool:
        """Whether compute runs in a 16-bit dtype (and the loss is scaled)."""
        return self.dtype != "float32"


@dataclass(frozen=True)
class MaskingConfig:
    """Span masking of the student's input frames (and optional channel masking)."""

    mask_prob: float = 0.8
    mask_selection: MaskingStrategy = "static"
    mask_other: float = 0.0
    mask_length: int = 10
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    mask_channel_prob: float = 0.0
    mask_channel_selection: MaskingStrategy = "static"
    mask_channel_other: float = 0.0
    mask_channel_length: int = 10
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1


@dataclass(frozen=True)
class Config:
    """The full training configuration."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: DinoSRConfig | SpidRConfig = field(default_factory=DinoSRConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    validation: dict[str, DataConfig] = field(default_factory=dict)
