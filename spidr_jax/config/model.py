"""Model configurations: the reference's `DinoSRConfig` and `SpidRConfig`, field for field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from spidr_jax.errors import UserError

ModelType = Literal["dinosr", "spidr"]
SAMPLE_RATE = 16_000
DEFAULT_CONV_LAYER_CONFIG: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclass(frozen=True)
class DinoSRConfig:
    """DinoSR architecture and self-distillation settings (same names and defaults as the reference)."""

    extractor_mode: Literal["group_norm", "layer_norm"] = "layer_norm"
    extractor_conv_bias: bool = False
    extractor_conv_layer_config: tuple[tuple[int, int, int], ...] = DEFAULT_CONV_LAYER_CONFIG
    encoder_embed_dim: int = 768
    encoder_projection_dropout: float = 0.0
    encoder_pos_conv_kernel: int = 95
    encoder_pos_conv_groups: int = 16
    encoder_pos_conv_depth: int = 5
    encoder_num_layers: int = 12
    encoder_num_heads: int = 12
    encoder_attention_dropout: float = 0.1
    encoder_ff_interm_features: int = 3072
    encoder_ff_interm_dropout: float = 0.0
    encoder_dropout: float = 0.1
    encoder_layer_norm_first: bool = False
    encoder_layer_drop: float = 0.05
    encoder_qkv_bias: bool = False

    codebook_size: int = 256
    codebook_decay: float = 0.9
    num_codebooks: int = 8
    ema_start_decay: float = 0.999
    ema_final_decay: float = 0.9999
    ema_final_step: int = 30_000
    ema_exclude_layers: tuple[str, ...] = ("pos_conv_embed",)
    freeze_step: int = 200_000

    def __post_init__(self) -> None:
        # JSON and TOML give lists; keep the config hashable so it can be a static jit argument.
        layers = tuple(tuple(int(v) for v in layer) for layer in self.extractor_conv_layer_config)
        object.__setattr__(self, "extractor_conv_layer_config", layers)
        object.__setattr__(self, "ema_exclude_layers", tuple(self.ema_exclude_layers))
        check_model_config(self)

    @property
    def model_type(self) -> ModelType:
        """Which model this config describes."""
        return "dinosr"

    @property
    def codebook_layers(self) -> tuple[int, ...]:
        """The 1-based encoder layers with a codebook (and a prediction head): the last `num_codebooks`.

        Codebook (and head) `i` belongs to layer `codebook_layers[i]`.
        """
        return tuple(range(self.encoder_num_layers - self.num_codebooks + 1, self.encoder_num_layers + 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the reference's field names (lists where the reference has lists)."""
        out = dataclasses.asdict(self)
        out["extractor_conv_layer_config"] = [list(layer) for layer in self.extractor_conv_layer_config]
        out["ema_exclude_layers"] = list(self.ema_exclude_layers)
        return out


@dataclass(frozen=True)
class SpidRConfig(DinoSRConfig):
    """SpidR: DinoSR's fields plus the exponential EMA schedule, and no layer drop by default."""

    ema_timescale: float = 20_000
    ema_threshold: float = 1e-7
    encoder_layer_drop: float = 0.0

    @property
    def model_type(self) -> ModelType:
        """Which model this config describes."""
        return "spidr"


ModelConfig = DinoSRConfig | SpidRConfig
CONFIG_CLASSES: dict[str, type[DinoSRConfig]] = {"dinosr": DinoSRConfig, "spidr": SpidRConfig}


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the field."""


def check_model_config(cfg: DinoSRConfig) -> None:  # noqa: C901 (one flat check per field)
    """Raise `ConfigError` naming the first inconsistent field."""
    if cfg.extractor_mode not in {"group_norm", "layer_norm"}:
        raise ConfigError(f"model.extractor_mode must be 'group_norm' or 'layer_norm', got {cfg.extractor_mode!r}")
    if not cfg.extractor_conv_layer_config or any(len(layer) != 3 for layer in cfg.extractor_conv_layer_config):
        raise ConfigError("model.extractor_conv_layer_config must be a non-empty list of [channels, kernel, stride]")
    if any(v <= 0 for layer in cfg.extractor_conv_layer_config for v in layer):
        raise ConfigError("model.extractor_conv_layer_config values must be positive")
    positive = (
        "encoder_embed_dim",
        "encoder_num_layers",
        "encoder_num_heads",
        "encoder_ff_interm_features",
        "encoder_pos_conv_kernel",
        "encoder_pos_conv_groups",
        "encoder_pos_conv_depth",
        "codebook_size",
    )
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.encoder_embed_dim % cfg.encoder_num_heads:
        raise ConfigError(
            f"model.encoder_embed_dim ({cfg.encoder_embed_dim}) must be divisible by "
            f"model.encoder_num_heads ({cfg.encoder_num_heads})"
        )
    if cfg.encoder_embed_dim % cfg.encoder_pos_conv_groups:
        raise ConfigError(
            f"model.encoder_embed_dim ({cfg.encoder_embed_dim}) must be divisible by "
            f"model.encoder_pos_conv_groups ({cfg.encoder_pos_conv_groups})"
        )
    if not 0 < cfg.num_codebooks <= cfg.encoder_num_layers:
        raise ConfigError(
            f"model.num_codebooks must be between 1 and encoder_num_layers ({cfg.encoder_num_layers}), "
            f"got {cfg.num_codebooks}"
        )
    for name in (
        "encoder_projection_dropout",
        "encoder_attention_dropout",
        "encoder_ff_interm_dropout",
        "encoder_dropout",
        "encoder_layer_drop",
    ):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"model.{name} must be in [0, 1], got {getattr(cfg, name)}")


def model_config_from_dict(model_type: str, values: dict[str, Any] | None = None) -> DinoSRConfig:
    """Build the config of `model_type` from a dict of reference field names; unknown fields are an error."""
    if model_type not in CONFIG_CLASSES:
        raise ConfigError(f"model type must be one of {sorted(CONFIG_CLASSES)}, got {model_type!r}")
    cls = CONFIG_CLASSES[model_type]
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown model config field(s) for {model_type}: {', '.join(unknown)}")
    return cls(**values)
