"""DinoSR Base: the reference's defaults for every section (`run.model_type = "dinosr"`).

Use: `--config=configs/dinosr.py --config.run.workdir=runs --config.data.manifest=train.csv`.
"""

from __future__ import annotations

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    """The DinoSR Base pretraining config: layer drop 0.05 and the linear teacher EMA schedule."""
    config = config_dict.ConfigDict()
    config.run = config_dict.ConfigDict(
        {
            "workdir": "",  # set on the command line
            "wandb_project": "spidr_jax",
            "wandb_name": "run",
            "wandb_mode": "offline",
            "random_seed": 0,
            "use_deterministic": False,
            "log_interval": 200,
            "save_interval": 2_500,
            "init_ckpt": config_dict.placeholder(str),
            "compile": True,
            "keep_latest": -1,
            "model_type": "dinosr",
            "slurm_validation": config_dict.placeholder(config_dict.ConfigDict),
        }
    )
    config.data = config_dict.ConfigDict(
        {
            "manifest": "",  # set on the command line
            "enable_padding": False,
            "rand_crop": True,
            "normalize": True,
            "num_buckets": 1000,
            "min_sample_size": 2_000,
            "max_sample_size": 320_000,
            "max_batch_length": 3_800_000,
            "drop_last": False,
            "num_workers": 10,
            "pin_memory": True,
            "prefetch_factor": 2,
            "persistent_workers": True,
            "random_seed": 0,
            "bucket_method": "uniform",
            "alignments_path": config_dict.placeholder(str),
            "num_static_shapes": 8,  # compiled (batch, samples) shapes
        }
    )
    config.model = config_dict.ConfigDict(
        {
            "extractor_mode": "layer_norm",
            "extractor_conv_bias": False,
            "extractor_conv_layer_config": ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2,
            "encoder_embed_dim": 768,
            "encoder_projection_dropout": 0.0,
            "encoder_pos_conv_kernel": 95,
            "encoder_pos_conv_groups": 16,
            "encoder_pos_conv_depth": 5,
            "encoder_num_layers": 12,
            "encoder_num_heads": 12,
            "encoder_attention_dropout": 0.1,
            "encoder_ff_interm_features": 3072,
            "encoder_ff_interm_dropout": 0.0,
            "encoder_dropout": 0.1,
            "encoder_layer_norm_first": False,
            "encoder_layer_drop": 0.05,
            "encoder_qkv_bias": False,
            "codebook_size": 256,
            "codebook_decay": 0.9,
            "num_codebooks": 8,
            "ema_start_decay": 0.999,
            "ema_final_decay": 0.9999,
            "ema_final_step": 30_000,
            "ema_exclude_layers": ("pos_conv_embed",),
            "freeze_step": 200_000,
        }
    )
    config.optimizer = config_dict.ConfigDict(
        {
            "lr": 5e-4,
            "betas": (0.9, 0.95),
            "weight_decay": 0.01,
            "eps": 1e-6,
            "max_norm": 10.0,
            "dtype": "bfloat16",
            "init_lr_scale": 0.01,
            "final_lr_scale": 0.01,
            "max_steps": 400_000,
            "warmup_steps": 12_000,
            "hold_steps": 188_000,
            "decay_steps": 200_000,
            "rsqrt_timescale": 10_000,
            "rsqrt_shift": 0,
            "scheduler": "tristage",
            "exclude_from_optimizer": ("teacher",),
            "to_freeze": ("feature_extractor", "feature_projection"),
        }
    )
    config.masking = config_dict.ConfigDict(
        {
            "mask_prob": 0.8,
            "mask_selection": "static",
            "mask_other": 0.0,
            "mask_length": 10,
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
    # Named validation sets, each a data section (missing fields take the data defaults); none by default.
    config.validation = config_dict.ConfigDict()
    return config
