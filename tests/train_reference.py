"""The reference's training loop body (spidr/train.py) on CPU, one device, as the oracle for the JAX step."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from spidr.checkpoint import remove_param_group
from spidr.config import OptimizerConfig as TorchOptimizerConfig
from spidr.optimizer import build_optimizer
from torch.nn.utils import clip_grad_norm_

from spidr_jax.config.run import OptimizerConfig


def torch_optimizer_config(cfg: OptimizerConfig) -> TorchOptimizerConfig:
    """The reference's OptimizerConfig with the same values."""
    values = dataclasses.asdict(cfg)
    values["exclude_from_optimizer"] = list(cfg.exclude_from_optimizer)
    values["to_freeze"] = list(cfg.to_freeze)
    return TorchOptimizerConfig(**values)


def reference_train(model, opt_cfg: OptimizerConfig, batches, freeze_step: int, *, autocast=None):
    """Run the reference's per-batch loop; returns per-step metrics and state_dict snapshots after each step."""
    model.train()
    optimizer, scaler, scheduler = build_optimizer(model, torch_optimizer_config(opt_cfg))
    records, snapshots = [], []
    for step, (waveforms_np, indices_np, *lengths_np) in enumerate(batches, start=1):
        waveforms, mask_indices = torch.from_numpy(waveforms_np), torch.from_numpy(indices_np)
        # A padded batch (waveforms, indices, lengths) gets the attention mask of the reference's collator.
        attn_mask = padding_attention_mask(model, lengths_np[0], mask_indices) if lengths_np else None
        num_frames = torch.tensor(mask_indices.numel())
        if autocast is None:
            loss, outputs = model(waveforms, mask_indices=mask_indices, attention_mask=attn_mask)
        else:
            with torch.autocast("cpu", dtype=autocast):
                loss, outputs = model(waveforms, mask_indices=mask_indices, attention_mask=attn_mask)
        loss = loss.sum() / num_frames
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = clip_grad_norm_(model.parameters(), opt_cfg.max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        decay = model.update_ema(step)
        if step == freeze_step and len(optimizer.param_groups) > 1:
            remove_param_group(optimizer, scheduler, 1)
        records.append(
            {
                "loss": float(loss.detach()),
                "grad_norm": float(grad_norm),
                "target_ppl": float(outputs["target_ppl"]),
                "pred_ppl": float(outputs["pred_ppl"]),
                "lr": lr,
                "ema_decay": decay,
            }
        )
        snapshots.append({k: v.detach().clone().numpy() for k, v in model.state_dict().items()})
    return records, snapshots


def padding_attention_mask(model, lengths: np.ndarray, mask_indices: torch.Tensor) -> torch.Tensor | None:
    """The attention mask SpeechCollatorWithMasking builds for rows of `lengths` samples (None without padding)."""
    # The collator's conv_length (spidr.data.dataset, whose module needs torchcodec to import).
    frames = torch.from_numpy(np.asarray(lengths, np.int64))
    for layer in model.feature_extractor.conv_layers:
        frames = torch.clamp((frames - layer.conv.kernel_size[0]) // layer.conv.stride[0] + 1, min=0)
    max_len = int(frames.max())
    padding_mask = torch.arange(max_len).expand(len(frames), max_len) >= frames[:, None]
    assert bool((mask_indices.max(dim=1).values < frames).all()), "mask indices must lie in the valid frames"
    return ~padding_mask[:, None, None, :] if bool(padding_mask.any()) else None


def random_batches(num: int, batch: int, samples: int, frames: int, masked: int, *, seed: int):
    """(waveforms, mask indices) pairs with an equal number of masked frames per row."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        waveforms = rng.standard_normal((batch, samples)).astype(np.float32)
        indices = np.stack([np.sort(rng.choice(frames, masked, replace=False)) for _ in range(batch)])
        out.append((waveforms, indices.astype(np.int64)))
    return out


def dense_mask(indices: np.ndarray, frames: int) -> np.ndarray:
    """(B, M) indices -> (B, frames) bool."""
    mask = np.zeros((indices.shape[0], frames), bool)
    np.put_along_axis(mask, indices, values=True, axis=1)
    return mask


def random_padded_batches(num: int, batch: int, samples: int, masked: int, *, seed: int, frames_of):
    """(waveforms, mask indices, lengths): rows of random lengths zero-padded to `samples` (the first row full).

    Mask indices are drawn within each row's valid frames (`frames_of(lengths)`), `masked` per row.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        lengths = rng.integers(samples // 2, samples + 1, size=batch)
        lengths[0] = samples  # the collator pads to the longest row of its batch
        waveforms = rng.standard_normal((batch, samples)).astype(np.float32)
        waveforms[np.arange(samples)[None, :] >= lengths[:, None]] = 0.0
        valid = np.asarray(frames_of(lengths))
        indices = np.stack([np.sort(rng.choice(int(v), masked, replace=False)) for v in valid])
        out.append((waveforms, indices.astype(np.int64), lengths.astype(np.int32)))
    return out
