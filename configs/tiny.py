"""Tiny SpidR: about 0.8 M parameters, a few training steps per second on 2 CPU cores (smoke tests, demos).

    python -m spidr_jax.train --config=configs/tiny.py --config.run.workdir=runs/tiny --config.data.manifest=train.csv

Only what differs from the base config is listed. The extractor keeps the reference's total stride of 320 samples
(50 frames per second); the teacher follows the student faster than in the base recipe (EMA timescale 1,000
steps), there is no dropout, shorter spans are masked and the codebooks adapt faster (decay 0.8), so that the loss
falls within a few hundred steps; the extractor is not frozen within `max_steps`.
"""

from __future__ import annotations

from ml_collections import config_dict

from spidr_jax.config import Config, DataConfig, MaskingConfig, OptimizerConfig, RunConfig, SpidRConfig
from spidr_jax.config.loading import config_to_config_dict

# The model's shape, also used by tests and benchmarks (`runpy.run_path("configs/tiny.py")["ARCHITECTURE"]`).
ARCHITECTURE = {
    "extractor_conv_layer_config": ((64, 10, 5), (64, 8, 4), (64, 4, 4), (64, 4, 4)),  # strides 5*4*4*4
    "encoder_embed_dim": 96,
    "encoder_num_heads": 2,
    "encoder_ff_interm_features": 192,
    "encoder_num_layers": 4,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_pos_conv_depth": 2,
    "codebook_size": 64,
    "num_codebooks": 3,
}


def get_config() -> config_dict.ConfigDict:
    """4 transformer layers of width 96, 3 codebooks of 64 entries, 2 s crops, float32."""
    return config_to_config_dict(
        Config(
            run=RunConfig(model_type="spidr", wandb_name="tiny", log_interval=10, save_interval=100, keep_latest=2),
            data=DataConfig(
                min_sample_size=4_000,
                max_sample_size=32_000,  # 2 s crops
                max_batch_length=8 * 32_000,
                num_workers=0,  # decoding a few short files per step is cheap; both cores go to the step
                num_static_shapes=3,
            ),
            model=SpidRConfig(
                **ARCHITECTURE,
                encoder_attention_dropout=0.0,
                encoder_dropout=0.0,
                codebook_decay=0.8,
                ema_timescale=1_000.0,
                freeze_step=1_000,
            ),
            optimizer=OptimizerConfig(
                lr=1e-3, betas=(0.9, 0.98), dtype="float32", max_steps=200, warmup_steps=20, scheduler="constant"
            ),
            masking=MaskingConfig(mask_prob=0.5, mask_length=5),
        )
    )
