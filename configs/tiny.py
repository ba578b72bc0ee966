"""Tiny SpidR: 0.43 M trained parameters (0.76 M with the teacher), a few steps per second on 2 CPU cores.

Use: `--config=configs/tiny.py --config.run.workdir=runs --config.data.manifest=train.csv`.

The extractor keeps the reference's total stride of 320 samples (50 frames per second at 16 kHz). For a model this
small and runs this short: no dropout, shorter and fewer masked spans (so that the context says something about the
masked frames), faster codebooks (decay 0.8 keeps more entries in use) and a teacher EMA that decays over 1,000
steps. On the demo corpus the loss falls below the entropy of the targets within 100-200 steps; the extractor is
never frozen within `max_steps`.
"""

from __future__ import annotations

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    """The tiny SpidR config: 4 transformer layers of width 96, 3 codebooks of 64 entries, 2 s crops."""
    config = config_dict.ConfigDict()
    config.run = config_dict.ConfigDict(
        {
            "workdir": "",  # set on the command line
            "wandb_project": "spidr_jax",
            "wandb_name": "tiny",
            "wandb_mode": "offline",
            "random_seed": 0,
            "use_deterministic": False,
            "log_interval": 10,
            "save_interval": 100,
            "init_ckpt": config_dict.placeholder(str),
            "compile": True,
            "keep_latest": 2,
            "model_type": "spidr",
            "slurm_validation": config_dict.placeholder(config_dict.ConfigDict),
        }
    )
    config.data = config_dict.ConfigDict(
        {
            "manifest": "",  # set on the command line
            "enable_padding": False,
            "rand_crop": True,
            "normalize": True,
            "num_buckets": 10,  # a small corpus: few buckets so that batches fill up
            "min_sample_size": 4_000,
            "max_sample_size": 32_000,  # 2 s crops
            "max_batch_length": 8 * 32_000,
            "drop_last": False,
            "num_workers": 0,  # decoding a few short files per step is cheap; both cores go to the step
            "pin_memory": True,
            "prefetch_factor": 2,
            "persistent_workers": True,
            "random_seed": 0,
            "bucket_method": "uniform",
            "alignments_path": config_dict.placeholder(str),
            "num_static_shapes": 3,  # compiled (batch, samples) shapes
        }
    )
    config.model = config_dict.ConfigDict(
        {
            "extractor_mode": "layer_norm",
            "extractor_conv_bias": False,
            # Strides 5 * 4 * 4 * 4 = 320, as the reference's 5 * 2**6.
            "extractor_conv_layer_config": ((64, 10, 5), (64, 8, 4), (64, 4, 4), (64, 4, 4)),
            "encoder_embed_dim": 96,
            "encoder_projection_dropout": 0.0,
            "encoder_pos_conv_kernel": 16,
            "encoder_pos_conv_groups": 4,
            "encoder_pos_conv_depth": 2,
            "encoder_num_layers": 4,
            "encoder_num_heads": 2,
            "encoder_attention_dropout": 0.0,
            "encoder_ff_interm_features": 192,
            "encoder_ff_interm_dropout": 0.0,
            "encoder_dropout": 0.0,
            "encoder_layer_norm_first": False,
            "encoder_layer_drop": 0.0,
            "encoder_qkv_bias": False,
            "codebook_size": 64,
            "codebook_decay": 0.8,
            "num_codebooks": 3,
            "ema_start_decay": 0.999,
            "ema_final_decay": 0.9999,  # DinoSR schedule only
            "ema_final_step": 100,  # DinoSR schedule only
            "ema_exclude_layers": ("pos_conv_embed",),
            "freeze_step": 1_000,
            "ema_timescale": 1_000.0,
            "ema_threshold": 1e-7,
        }
    )
    config.optimizer = config_dict.ConfigDict(
        {
            "lr": 1e-3,
            "betas": (0.9, 0.98),
            "weight_decay": 0.01,
            "eps": 1e-6,
            "max_norm": 10.0,
            "dtype": "float32",
            "init_lr_scale": 0.01,
            "final_lr_scale": 0.01,
            "max_steps": 200,
            "warmup_steps": 20,
            "hold_steps": 80,
            "decay_steps": 100,
            "rsqrt_timescale": 100,
            "rsqrt_shift": 0,
            "scheduler": "constant",
            "exclude_from_optimizer": ("teacher",),
            "to_freeze": ("feature_extractor", "feature_projection"),
        }
    )
    config.masking = config_dict.ConfigDict(
        {
            "mask_prob": 0.5,
            "mask_selection": "static",
            "mask_other": 0.0,
            "mask_length": 5,
            "no_mask_overlap": False,
            "mask_min_space": 1,
            "mask_channel_prob": 0.0,
            "mask_channel_selection": "static",
            "mask_channel_other": 0.0,
            "mask_channel_length": 10,
            "no_mask_channel_overlap": False,
            "mask_channel_min_space": 1,
        }
    )
    config.validation = config_dict.ConfigDict()
    return config
