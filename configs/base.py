"""SpidR base: the reference's defaults for every section, with `run.model_type = "spidr"`.

    python -m spidr_jax.train --config=configs/base.py --config.run.workdir=runs/base --config.data.manifest=train.csv

Every field comes from the dataclasses in `spidr_jax.config` (the reference's names and defaults); print the full
config with `python -m spidr_jax.config.cli --config=configs/base.py`.
"""

from __future__ import annotations

from ml_collections import config_dict

from spidr_jax.config import Config, RunConfig, SpidRConfig
from spidr_jax.config.loading import config_to_config_dict


def get_config() -> config_dict.ConfigDict:
    """The SpidR base pretraining config."""
    return config_to_config_dict(Config(run=RunConfig(model_type="spidr"), model=SpidRConfig()))
