"""The original fairseq DinoSR checkpoint -> the reference's state_dict naming.

fairseq stores the student under `model` (separate q/k/v projections, `encoder.*` names) and the EMA teacher as
`model["_ema"]`. Names are translated with patterns, q/k/v are concatenated into one qkv tensor, and the step comes
from the optimizer state. Layer, conv and codebook counts are read from the keys, not assumed.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from spidr_jax.convert.torch_layout import StateDictMismatchError

_LAYER = {
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
    "self_attn.out_proj": "attention.proj",
    "self_attn_layer_norm": "layer_norm",
}
_STUDENT_PATTERNS = [
    (r"mask_emb", "mask_embedding"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"_codebook(\d+)", r"codebooks.\1.codebook"),
    (r"_codebook_cnts(\d+)", r"codebooks.\1.counts"),
    (r"heads\.(\d+)\.(weight|bias)", r"heads.\1.0.\2"),
]


def _encoder_patterns(fairseq_prefix: str, prefix: str) -> list[tuple[str, str]]:
    patterns = [
        (rf"{fairseq_prefix}layer_norm\.(weight|bias)", rf"{prefix}.layer_norm.\1"),
        (rf"{fairseq_prefix}pos_conv\.(\d+)\.0\.(weight|bias)", rf"{prefix}.pos_conv_embed.convs.\1.\2"),
        (
            rf"{fairseq_prefix}layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)",
            rf"{prefix}.layers.\1.attention.\2_proj.\3",
        ),
    ]
    for fairseq_name, name in _LAYER.items():
        escaped = re.escape(fairseq_name)
        patterns.append((rf"{fairseq_prefix}layers\.(\d+)\.{escaped}\.(weight|bias)", rf"{prefix}.layers.\1.{name}.\2"))
    return patterns


def _rename(weights: dict[str, Any], patterns: list[tuple[str, str]], where: str) -> dict[str, np.ndarray]:
    out, unknown = {}, []
    for key, value in weights.items():
        for pattern, replacement in patterns:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, replacement, key)] = np.asarray(value)
                break
        else:
            unknown.append(key)
    if unknown:
        raise StateDictMismatchError(f"unexpected keys in the fairseq checkpoint's {where}: {', '.join(unknown[:8])}")
    return out


def _fuse_qkv(state: dict[str, np.ndarray]) -> None:
    for key in [k for k in state if ".attention.q_proj." in k]:
        base, leaf = key.split(".attention.q_proj.")
        parts = [f"{base}.attention.{p}_proj.{leaf}" for p in "qkv"]
        missing = [p for p in parts if p not in state]
        if missing:
            raise StateDictMismatchError(f"fairseq checkpoint lacks {', '.join(missing)}")
        state[f"{base}.attention.qkv.{leaf}"] = np.concatenate([state.pop(p) for p in parts], axis=0)


def _optimizer_step(checkpoint: dict[str, Any]) -> int:
    try:
        return int(checkpoint["last_optimizer_state"]["state"][0]["step"])
    except (KeyError, IndexError, TypeError):
        return 0


def state_dict_from_fairseq(checkpoint: dict[str, Any]) -> dict[str, np.ndarray]:
    """Reference-named state_dict (numpy) from a fairseq DinoSR checkpoint dict (values may be torch tensors)."""
    if "model" not in checkpoint or "_ema" not in checkpoint["model"]:
        raise StateDictMismatchError("not a fairseq DinoSR checkpoint: expected checkpoint['model']['_ema']")
    model = {k: v for k, v in checkpoint["model"].items() if k != "_ema"}
    state = _rename(model, _STUDENT_PATTERNS + _encoder_patterns("encoder.", "student"), "model")
    state |= _rename(checkpoint["model"]["_ema"], _encoder_patterns("", "teacher"), "model['_ema']")
    _fuse_qkv(state)
    state["current_step"] = np.array([_optimizer_step(checkpoint)], dtype=np.int64)
    return state
