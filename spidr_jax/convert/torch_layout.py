"""The reference's PyTorch state_dict layout and how each tensor maps onto this package's parameter tree.

One table (`torch_layout`) drives both directions, so torch -> JAX -> torch is bit-exact. Everything here works on
numpy arrays; reading and writing `.pt` files lives in `spidr_jax.convert.torch_files`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.errors import UserError

Kind = Literal["copy", "linear", "conv", "step"]
Path = tuple[str | int, ...]


class StateDictMismatchError(UserError, ValueError):
    """A state_dict does not fit the model config; the message names the offending keys and shapes."""


class NonFiniteWeightError(StateDictMismatchError):
    """A tensor holds NaN or infinite values; the message names it."""


@dataclass(frozen=True)
class Entry:
    """One torch tensor: its key, where it lives in the JAX tree, how it is laid out, and its torch shape."""

    key: str
    path: Path  # path in the pure-dict tree; a trailing int indexes a stacked (heads, codebooks) array
    kind: Kind
    shape: tuple[int, ...]
    stacked: bool = False


def _linear(key: str, path: Path, n_in: int, n_out: int, *, bias: bool = True) -> Iterator[Entry]:
    yield Entry(f"{key}.weight", (*path, "kernel"), "linear", (n_out, n_in))
    if bias:
        yield Entry(f"{key}.bias", (*path, "bias"), "copy", (n_out,))


def _norm(key: str, path: Path, n: int) -> Iterator[Entry]:
    yield Entry(f"{key}.weight", (*path, "scale"), "copy", (n,))
    yield Entry(f"{key}.bias", (*path, "bias"), "copy", (n,))


def _transformer(prefix: str, cfg: DinoSRConfig) -> Iterator[Entry]:
    dim, groups = cfg.encoder_embed_dim, cfg.encoder_pos_conv_groups
    kernel = max(3, cfg.encoder_pos_conv_kernel // cfg.encoder_pos_conv_depth)
    for i in range(cfg.encoder_pos_conv_depth):
        key = f"{prefix}.pos_conv_embed.convs.{i}"
        yield Entry(f"{key}.weight", (prefix, "pos_conv_embed", "kernels", i), "conv", (dim, dim // groups, kernel))
        yield Entry(f"{key}.bias", (prefix, "pos_conv_embed", "biases", i), "copy", (dim,))
    yield from _norm(f"{prefix}.layer_norm", (prefix, "layer_norm"), dim)
    for i in range(cfg.encoder_num_layers):
        key, path = f"{prefix}.layers.{i}", (prefix, "layers", i)
        yield from _linear(f"{key}.attention.qkv", (*path, "attention", "qkv"), dim, 3 * dim, bias=cfg.encoder_qkv_bias)
        yield from _linear(f"{key}.attention.proj", (*path, "attention", "proj"), dim, dim)
        yield from _norm(f"{key}.layer_norm", (*path, "layer_norm"), dim)
        ff, hidden = (*path, "feed_forward"), cfg.encoder_ff_interm_features
        yield from _linear(f"{key}.feed_forward.intermediate_dense", (*ff, "intermediate_dense"), dim, hidden)
        yield from _linear(f"{key}.feed_forward.output_dense", (*ff, "output_dense"), hidden, dim)
        yield from _norm(f"{key}.final_layer_norm", (*path, "final_layer_norm"), dim)


def torch_layout(cfg: DinoSRConfig) -> list[Entry]:
    """Every tensor of the reference model's state_dict for `cfg`, in the reference's order."""
    entries = [Entry("mask_embedding", ("mask_embedding",), "copy", (cfg.encoder_embed_dim,))]
    entries.append(Entry("current_step", ("current_step",), "step", (1,)))
    in_channels = 1
    for i, (out_channels, kernel, _) in enumerate(cfg.extractor_conv_layer_config):
        key, path = f"feature_extractor.conv_layers.{i}", ("feature_extractor", "conv_layers", i)
        entries.append(Entry(f"{key}.conv.weight", (*path, "kernel"), "conv", (out_channels, in_channels, kernel)))
        if cfg.extractor_conv_bias:
            entries.append(Entry(f"{key}.conv.bias", (*path, "bias"), "copy", (out_channels,)))
        if cfg.extractor_mode == "layer_norm":
            entries.extend(_norm(f"{key}.layer_norm", (*path, "layer_norm"), out_channels))
        elif i == 0:
            entries.extend(_norm(f"{key}.layer_norm", (*path, "group_norm"), out_channels))
        in_channels = out_channels
    entries.extend(_norm("feature_projection.layer_norm", ("feature_projection", "layer_norm"), in_channels))
    projection = ("feature_projection", "projection")
    entries.extend(_linear("feature_projection.projection", projection, in_channels, cfg.encoder_embed_dim))
    entries.extend(_transformer("student", cfg))
    dim, size = cfg.encoder_embed_dim, cfg.codebook_size
    for i in range(cfg.num_codebooks):
        entries.append(Entry(f"heads.{i}.0.weight", ("heads", "kernel", i), "linear", (size, dim), stacked=True))
        entries.append(Entry(f"heads.{i}.0.bias", ("heads", "bias", i), "copy", (size,), stacked=True))
    for i in range(cfg.num_codebooks):
        entries.append(Entry(f"codebooks.{i}.codebook", ("codebooks", "sums", i), "copy", (size, dim), stacked=True))
        entries.append(Entry(f"codebooks.{i}.counts", ("codebooks", "counts", i), "copy", (size,), stacked=True))
    entries.extend(_transformer("teacher", cfg))
    return entries


def _to_jax(array: np.ndarray, kind: Kind) -> np.ndarray:
    if kind != "step":
        # The model holds float32 everywhere but the step; torch files may store counts as int64 or float64.
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
            array = np.asarray(array, dtype=np.float32)
    if kind == "linear":
        return np.ascontiguousarray(array.T)
    if kind == "conv":  # torch (out, in, k) -> (k, in, out)
        return np.ascontiguousarray(array.transpose(2, 1, 0))
    if kind == "step":
        return np.asarray(array.reshape(()), dtype=np.int32)
    return np.ascontiguousarray(array)


def _to_torch(array: np.ndarray, kind: Kind) -> np.ndarray:
    if kind == "linear":
        return np.ascontiguousarray(array.T)
    if kind == "conv":
        return np.ascontiguousarray(array.transpose(2, 1, 0))
    if kind == "step":
        return np.asarray(array, dtype=np.int64).reshape(1)
    return np.ascontiguousarray(array)


def check_state_dict(state_dict: dict[str, Any], cfg: DinoSRConfig) -> None:
    """Raise StateDictMismatchError listing missing keys, unexpected keys and shapes that do not fit `cfg`."""
    layout = torch_layout(cfg)
    expected = {e.key: e.shape for e in layout}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: {tuple(np.shape(state_dict[k]))} (expected {expected[k]})"
        for k in expected
        if k in state_dict and tuple(np.shape(state_dict[k])) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch: {_preview(wrong)}")
    if problems:
        raise StateDictMismatchError("state_dict does not fit the model config: " + "; ".join(problems))


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _set(tree: dict, path: Path, value: np.ndarray) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _get(tree: dict, path: Path) -> Any:  # noqa: ANN401
    for part in path:
        tree = tree[part]
    return tree


def state_dict_to_tree(state_dict: dict[str, Any], cfg: DinoSRConfig) -> dict:
    """The reference's state_dict (numpy values) -> this package's pure-dict parameter tree."""
    check_state_dict(state_dict, cfg)
    tree: dict = {}
    stacks: dict[Path, dict[int, np.ndarray]] = {}
    for e in torch_layout(cfg):
        value = _to_jax(np.asarray(state_dict[e.key]), e.kind)
        if not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise NonFiniteWeightError(f"tensor {e.key} has {bad} non-finite values (NaN or inf); refusing to convert")
        if e.stacked:
            stacks.setdefault(e.path[:-1], {})[int(e.path[-1])] = value
        else:
            _set(tree, e.path, value)
    for path, parts in stacks.items():
        _set(tree, path, np.stack([parts[i] for i in range(len(parts))]))
    return tree


def tree_to_state_dict(tree: dict, cfg: DinoSRConfig) -> dict[str, np.ndarray]:
    """Pure-dict parameter tree -> the reference's state_dict (numpy values, reference order)."""
    out: dict[str, np.ndarray] = {}
    for e in torch_layout(cfg):
        value = np.asarray(_get(tree, e.path[:-1]))[int(e.path[-1])] if e.stacked else np.asarray(_get(tree, e.path))
        out[e.key] = _to_torch(value, e.kind)
    return out
