"""PNG figures: training curves from TensorBoard logs, codebook usage, and the phone-vs-unit probability matrix.

Plotting needs matplotlib (``pip install 'spidr-jax[plot]'``); figures are drawn with the Agg canvas directly, so
the global pyplot backend is left untouched. Reading the logs (:func:`read_scalars`) only needs tensorboardX.

Event files are TFRecord streams: each record is a little-endian u64 length, the masked CRC-32C of those 8 bytes,
the serialized ``Event`` protobuf, and the masked CRC-32C of the payload.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spidr_jax.errors import InputError
from spidr_jax.torch_hidden import torch_hidden

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from tensorboardX.proto.summary_pb2 import Summary

__all__ = ["plot_codebook_usage", "plot_phone_unit_matrix", "plot_training_curves", "read_scalars", "usage"]

_MISSING_MATPLOTLIB = "Plots need matplotlib: pip install 'spidr-jax[plot]'"
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _masked_crc(data: bytes) -> int:
    """CRC-32C of ``data``, masked as in TFRecord files."""
    with torch_hidden():
        from tensorboardX.crc32c import crc32c  # noqa: PLC0415 (pure Python unless a native crc32c is installed)

    crc = crc32c(data) & 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _scalar_value(value: Summary.Value) -> float | None:
    """The number held by a ``Summary.Value``, whether written as ``simple_value`` or as a scalar tensor."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        tensor = value.tensor
        for field in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
            if len(field) == 1:
                return float(field[0])
        if len(tensor.tensor_content) in (4, 8):
            return float(
                np.frombuffer(tensor.tensor_content, dtype="<f4" if len(tensor.tensor_content) == 4 else "<f8")[0]
            )
    return None


def _read_event_file(path: Path, scalars: dict[str, dict[int, float]], *, check_data_crc: bool) -> None:
    """Add the scalars of one event file to ``scalars`` (tag -> step -> value); later records win."""
    with torch_hidden():
        from tensorboardX.proto.event_pb2 import Event  # noqa: PLC0415 (protobuf import is slow; only needed here)

    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, header_crc = _HEADER.unpack_from(data, offset)
        if header_crc != _masked_crc(data[offset : offset + 8]):
            warnings.warn(f"{path}: corrupted record header at byte {offset}; the rest is skipped", stacklevel=3)
            return
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if end + _FOOTER.size > len(data):
            return  # Last record still being written.
        payload = data[start:end]
        if check_data_crc and _FOOTER.unpack_from(data, end)[0] != _masked_crc(payload):
            warnings.warn(f"{path}: corrupted record at byte {offset}; the rest is skipped", stacklevel=3)
            return
        offset = end + _FOOTER.size
        event = Event.FromString(payload)
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            number = _scalar_value(value)
            if number is not None:
                scalars.setdefault(value.tag, {})[int(event.step)] = number


def read_scalars(workdir: str | Path, *, check_data_crc: bool = False) -> dict[str, list[tuple[int, float]]]:
    """Scalars logged in the TensorBoard event files found anywhere below ``workdir``.

    Files are read in name order (their names start with the creation time), so when a resumed run logs a step
    again, the latest value is kept.

    :param workdir: A run directory, or a single event file.
    :param check_data_crc: Also verify each payload checksum (slow for large logs without a native crc32c).
    :returns: Mapping from tag to (step, value) pairs sorted by step.
    """
    root = Path(workdir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob("events.out.tfevents.*"), key=lambda p: (p.name, str(p)))
    else:
        raise FileNotFoundError(f"No such run directory: {root}")
    scalars: dict[str, dict[int, float]] = {}
    for path in files:
        _read_event_file(path, scalars, check_data_crc=check_data_crc)
    return {tag: sorted(steps.items()) for tag, steps in sorted(scalars.items())}


def _new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure attached to an Agg canvas, or an ImportError naming the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (optional dependency)
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(_MISSING_MATPLOTLIB) from error
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, output_png: str | Path) -> Path:
    """Write ``figure`` as a PNG, creating the parent directory."""
    path = Path(output_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_training_curves(workdir: str | Path, output_png: str | Path) -> Path:
    """Loss, codebook perplexities, units' PNMI, learning rate and gradient norm against the training step.

    Reads ``train/loss`` and every ``<valset>/loss``; the tags starting with ``train/target_ppl`` or
    ``train/pred_ppl``; the ``<valset>/units_layer<N>/pnmi`` of validation sets with alignments; ``train/lr`` and
    ``train/grad_norm``. A panel whose scalars were not logged says so.
    """
    scalars = read_scalars(workdir)
    loss_tags = sorted((t for t in scalars if t.endswith("/loss")), key=lambda t: (t != "train/loss", t))
    ppl_tags = sorted(t for t in scalars if t.startswith(("train/target_ppl", "train/pred_ppl")))
    if not loss_tags and not ppl_tags:
        raise InputError(f"No loss or perplexity scalars found in {workdir}")
    pnmi_tags = sorted(t for t in scalars if "/units_layer" in t and t.endswith("/pnmi"))
    panels = [
        (loss_tags, "Loss", False),
        (ppl_tags, "Codebook perplexity", False),
        (pnmi_tags, "PNMI of the codebook units (dev)", False),
        ([t for t in ("train/lr", "train/grad_norm") if t in scalars], "Learning rate and gradient norm", True),
    ]
    figure = _new_figure(11, 7.5)
    for axis, (tags, title, log_scale) in zip(figure.subplots(2, 2).reshape(-1), panels, strict=True):
        for tag in tags:
            steps, values = zip(*scalars[tag], strict=True)
            axis.plot(steps, values, label=tag, marker="o" if len(steps) < 20 else None, markersize=3)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if log_scale and tags:
            axis.set_yscale("log")
        if tags:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
    last = max((steps[-1][0] for steps in scalars.values() if steps), default=0)
    figure.suptitle(f"{Path(workdir).resolve()} (steps 0-{last})")
    return _save(figure, output_png)


def usage(counts: np.ndarray) -> tuple[float, int]:
    """(perplexity, active entries) of a codebook's usage counts: 2 ** entropy (bits) of their distribution."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    used = counts[counts > 0] / counts.sum()
    return float(np.exp2(-np.sum(used * np.log2(used)))), len(used)


def plot_codebook_usage(
    counts_per_layer: Mapping[int, np.ndarray], output_png: str | Path, *, title: str = "Codebook usage"
) -> Path:
    """Per layer, codebook entries sorted by decreasing usage (log scale), with perplexity and active entries.

    :param counts_per_layer: Mapping from layer index to the (codebook size,) count of each entry.
    :param title: what the counts are of (the data and the checkpoint's step).
    """
    if not counts_per_layer:
        raise InputError("No codebook counts to plot")
    figure = _new_figure(8, 4.5)
    axis = figure.subplots()
    for layer, counts in sorted(counts_per_layer.items()):
        counts_arr = np.asarray(counts, dtype=np.float64).reshape(-1)
        if counts_arr.sum() <= 0:
            raise InputError(f"Layer {layer}: the codebook was never used")
        freq = np.sort(counts_arr)[::-1] / counts_arr.sum()
        perplexity, active = usage(counts_arr)
        label = f"layer {layer}: perplexity {perplexity:.1f}, active {active}/{len(freq)}"
        axis.step(np.arange(1, len(freq) + 1), np.where(freq > 0, freq, np.nan), where="mid", label=label)
    axis.set_yscale("log")
    axis.set_xlabel("codebook entry (sorted by usage)")
    axis.set_ylabel("frequency")
    axis.set_title(title, fontsize="medium")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small")
    return _save(figure, output_png)


def plot_phone_unit_matrix(
    proba: np.ndarray,
    phone_order: Sequence[str],
    output_png: str | Path,
    *,
    unit_order: Sequence[int] | None = None,
    title: str = "P(phone | unit)",
) -> Path:
    """The phone-vs-unit probability matrix: phones on y (most frequent on top), units on x.

    Takes the outputs of :func:`spidr_jax.evaluate.units_quality.phone_unit_probabilities`, whose columns are
    already grouped by most probable phone, so the matrix reads as a staircase when units are phone-like.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != len(phone_order):
        raise InputError(f"proba must be (phones={len(phone_order)}, units), got shape {proba.shape}")
    num_phones, num_units = proba.shape
    figure = _new_figure(max(6.0, min(20.0, 2 + num_units / 25)), max(4.0, min(16.0, 1 + num_phones * 0.18)))
    axis = figure.subplots()
    image = axis.imshow(proba, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
    axis.set_yticks(np.arange(num_phones), labels=list(phone_order), fontsize=7 if num_phones > 30 else 9)
    axis.set_ylabel("phone (by decreasing frequency)")
    if unit_order is not None and num_units <= 60:
        axis.set_xticks(np.arange(num_units), labels=[str(u) for u in unit_order], fontsize=6, rotation=90)
        axis.set_xlabel("unit")
    else:
        axis.set_xlabel(f"units ({num_units}, grouped by most probable phone)")
    axis.set_title(title, fontsize="medium")
    figure.colorbar(image, ax=axis, fraction=0.03)
    return _save(figure, output_png)
