"""A reference TOML run config (`spidr.config.read_config` layout), for runs that start from one.

Use: `--config=configs/toml.py:path/to/run.toml --config.run.workdir=runs`.

Every field of every section is present (missing ones take the defaults), so any of them can be overridden on the
command line. As in the reference, `run.model_type` defaults to "dinosr" and picks the fields of `[model]`.
"""

from __future__ import annotations

from ml_collections import config_dict

from spidr_jax.config.loading import config_from_toml
from spidr_jax.config.model import ConfigError


def get_config(path: str | None = None) -> config_dict.ConfigDict:
    """The config of the TOML file at `path` (given after the colon: `configs/toml.py:run.toml`)."""
    if not path:
        raise ConfigError("configs/toml.py needs a TOML file: pass --config=configs/toml.py:path/to/run.toml")
    return config_from_toml(path)
