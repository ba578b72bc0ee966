"""Conversions between the reference's PyTorch checkpoints and this package's converted-model directories."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from spidr_jax.interop.torch_files import (
    SourceFormat,
    config_beside,
    load_torch_file,
    reference_state_dict,
    save_torch_state_dict,
)
from spidr_jax.interop.torch_layout import state_dict_to_tree, tree_to_state_dict
from spidr_jax.pretrained import read_pretrained, save_pretrained


def torch_to_orbax(
    input_path: str | Path, output_dir: str | Path, source: SourceFormat, overrides: dict[str, Any] | None = None
) -> Path:
    """Convert a reference (or fairseq DinoSR) checkpoint into a converted-model directory; returns its path."""
    cfg = config_beside(input_path, source, overrides)
    state_dict = reference_state_dict(load_torch_file(input_path), source)
    tree = state_dict_to_tree(state_dict, cfg)
    return save_pretrained(output_dir, cfg, tree)


def orbax_to_torch(input_dir: str | Path, output_path: str | Path) -> Path:
    """Write {"model": state_dict} loadable with strict=True into the reference model of the same config.

    A `config.json` in the reference's layout is written next to the file unless one is already there, so the
    reference's `build_model(checkpoint=...)` finds the config.
    """
    cfg, tree = read_pretrained(input_dir)
    state_dict = tree_to_state_dict(tree, cfg)
    output_path = Path(output_path).resolve()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent)
    os.close(fd)
    try:
        save_torch_state_dict(state_dict, tmp_name)
        Path(tmp_name).replace(output_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    config_path = output_path.parent / "config.json"
    if not config_path.exists():
        config = {"run": {"model_type": cfg.model_type}, "model": cfg.to_dict()}
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return output_path


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> dict; values are JSON when they parse (true, 3, [..]) and strings otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return out
