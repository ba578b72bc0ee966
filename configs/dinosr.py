"""DinoSR base: the reference's defaults for every section (DinoSRConfig for the model).

python -m spidr_jax.train --config=configs/dinosr.py --config.run.workdir=runs/dinosr --config.data.manifest=train.csv
"""

from __future__ import annotations

from ml_collections import config_dict

from spidr_jax.config import Config, DinoSRConfig, RunConfig
from spidr_jax.config.loading import config_to_config_dict


def get_config() -> config_dict.ConfigDict:
    """The DinoSR base pretraining config."""
    return config_to_config_dict(Config(run=RunConfig(model_type="dinosr"), model=DinoSRConfig()))
