"""Demo: a tiny SpidR trained on the bundled speech corpus, on a laptop CPU in under 10 minutes.

    python -m spidr_jax.train --config=configs/demo.py

Needs no other argument: the corpus ships with the package (320 synthesized English utterances with phone
alignments, see spidr_jax/demo/corpus/README.md). The run goes to ./runs/demo (override with
--config.run.workdir=...); the dev split is validated at every save, and the units of each codebook layer are
scored against its phone alignments (PNMI, purities, perplexity, bitrate), first on the untrained model, so the
end of the run prints the units quality before and after training.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ml_collections import config_dict

from spidr_jax import demo


def _tiny() -> config_dict.ConfigDict:
    spec = importlib.util.spec_from_file_location("tiny_config", Path(__file__).with_name("tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config() -> config_dict.ConfigDict:
    """The tiny model on the demo corpus, with unit-quality validation on its dev split."""
    config = _tiny()
    config.run.workdir = "runs/demo"
    config.run.wandb_name = "demo"
    config.run.log_interval = 50
    config.run.save_interval = 500
    config.run.keep_latest = -1
    config.data.manifest = str(demo.manifest_path("train"))
    config.data.num_static_shapes = 2
    config.optimizer.max_steps = 2000
    config.validation = config_dict.ConfigDict(
        {
            "dev": {
                "manifest": str(demo.manifest_path("dev")),
                "alignments_path": str(demo.alignments_path("dev")),
                "min_sample_size": config.data.min_sample_size,
                "max_sample_size": config.data.max_sample_size,
                "max_batch_length": config.data.max_batch_length,
                "num_static_shapes": 1,
                "num_workers": 0,
            }
        }
    )
    return config
