"""Helpers to build reference (PyTorch `spidr`) models and save them the way the released files are saved."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path

import numpy as np
import torch
from spidr.config import DinoSRConfig as TorchDinoSRConfig
from spidr.config import SpidRConfig as TorchSpidRConfig
from spidr.models import DinoSR as TorchDinoSR
from spidr.models import SpidR as TorchSpidR

# A small model that still exercises every code path: 3 conv layers, 4 transformer layers, 3 codebooks.
SMALL = {
    "extractor_conv_layer_config": [(32, 10, 5), (32, 3, 2), (32, 2, 2)],
    "encoder_embed_dim": 48,
    "encoder_num_heads": 4,
    "encoder_ff_interm_features": 96,
    "encoder_num_layers": 4,
    "encoder_pos_conv_kernel": 15,
    "encoder_pos_conv_groups": 4,
    "encoder_pos_conv_depth": 3,
    "num_codebooks": 3,
    "codebook_size": 16,
}

# The demo model's shape (configs/tiny.py), for tests that need a model but not a trained one.
TINY = runpy.run_path(str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py"))["ARCHITECTURE"]


def reference_model(model_type: str, seed: int = 0, **fields: object) -> tuple[TorchDinoSR, TorchDinoSRConfig]:
    """A randomly initialized reference model in eval mode, and its config."""
    torch.manual_seed(seed)
    if model_type == "spidr":
        cfg = TorchSpidRConfig(**fields)
        return TorchSpidR(cfg).eval(), cfg
    cfg = TorchDinoSRConfig(**fields)
    return TorchDinoSR(cfg).eval(), cfg


def save_release(
    model: TorchDinoSR, cfg: TorchDinoSRConfig, directory: Path, model_type: str, name: str = "model.pt"
) -> Path:
    """Save like the released files: {"model": state_dict}, with the run config's model section beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    torch.save({"model": model.state_dict()}, path)
    config = {"run": {"model_type": model_type}, "model": dataclasses.asdict(cfg)}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def scale_error(reference: np.ndarray, ours: np.ndarray) -> float:
    """Max abs error relative to the reference output's scale (max abs value)."""
    reference, ours = np.asarray(reference, np.float64), np.asarray(ours, np.float64)
    assert reference.shape == ours.shape, (reference.shape, ours.shape)
    return float(np.max(np.abs(reference - ours)) / max(np.max(np.abs(reference)), 1e-12))


def tiny_orbax_checkpoint(root: Path) -> Path:
    """A tiny SpidR with random weights (seed 3) saved like a release and converted under `root`."""
    from spidr_jax.convert.conversion import torch_to_orbax

    model, config = reference_model("spidr", 3, **TINY)
    return torch_to_orbax(save_release(model, config, root / "release", "spidr"), root / "orbax", "spidr")
