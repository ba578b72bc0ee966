"""Configuration dataclasses with the reference's section and field names."""

from spidr_jax.config.model import ConfigError, DinoSRConfig, SpidRConfig, model_config_from_dict
from spidr_jax.config.run import Config, DataConfig, MaskingConfig, OptimizerConfig, RunConfig

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DinoSRConfig",
    "MaskingConfig",
    "OptimizerConfig",
    "RunConfig",
    "SpidRConfig",
    "model_config_from_dict",
]
