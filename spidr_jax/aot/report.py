"""The records of a check, one per (target, batch shape, phase): as a table, as JSON lines, and as error lines.

A record says whether the step fits the device's memory, what the compiler planned, and what the step costs. Its
`bound` is the roofline bound `max(FLOPs / peak, bytes / bandwidth)`: the fastest the step could run on the data
sheet's figures, never a measurement.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from spidr_jax.aot.costs import BYTES_SOURCE, STEP_FLOPS_SOURCE
from spidr_jax.aot.targets import GIB
from spidr_jax.data.audio import SAMPLE_RATE

BOUND_NOTE = "roofline bound max(FLOPs/peak, bytes/bandwidth) on the data sheet's figures: a bound, not a measurement"
TPU_REFUSAL = re.compile(r"required for .*?\(([\d.]+)([KMGT])\) exceeds available \w+ \(([\d.]+)([KMGT])\)")
UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass
class AotRecord:
    """One compiled (target, shape, phase): fit, memory, FLOPs, bytes, kernels, and the bound on the step time."""

    target: str
    platform: str
    devices: int
    hosts: int
    slices: int
    shape: dict  # batch_per_device, samples, seconds, frames, global_batch
    phase: str  # "training" (before model.freeze_step) or "frozen" (the extractor frozen, from freeze_step on)
    fits: bool
    compile_seconds: float
    memory: dict  # bytes per device: arguments, outputs, aliased, temporaries, total, available, headroom_percent
    flops: float | None = None  # per device per step
    bytes_accessed: float | None = None  # per device per step
    kernels: dict = field(default_factory=dict)  # launches per step by kind, and total
    float32_products: int | None = None  # launches per step of matrix products / convolutions reading float32
    bound: dict = field(default_factory=dict)  # step_seconds, limited_by, audio_seconds_per_second_per_device, ...
    sources: dict = field(default_factory=dict)  # what the FLOPs, bytes and bound are built from
    message: str = ""  # why it does not fit, in one line

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=False)


def shape_fields(batch_per_device: int, samples: int, frames: int, global_batch: int) -> dict:
    """The `shape` entry of a record."""
    return {
        "batch_per_device": batch_per_device,
        "samples": samples,
        "seconds": samples / SAMPLE_RATE,
        "frames": frames,
        "global_batch": global_batch,
    }


def sources() -> dict:
    """The `sources` entry: how the figures are obtained."""
    return {"flops": STEP_FLOPS_SOURCE, "bytes": BYTES_SOURCE, "bound": BOUND_NOTE}


def refusal_bytes(message: str) -> tuple[int, int] | None:
    """(needed, available) bytes from the TPU compiler's RESOURCE_EXHAUSTED message, when it gives them."""
    match = TPU_REFUSAL.search(message)
    if match is None:
        return None
    needed = float(match.group(1)) * UNITS[match.group(2)]
    available = float(match.group(3)) * UNITS[match.group(4)]
    return int(needed), int(available)


def fit_advice(record: AotRecord, run_fields: dict) -> str:
    """What would make a shape fit: a smaller budget, rematerialization, scanned layers."""
    memory = record.memory
    needed, available = memory["total"], memory["available"]
    rows = record.shape["batch_per_device"]
    samples = record.shape["samples"]
    fitting_rows = int(rows * available / needed) if needed else rows
    fixes = []
    if fitting_rows >= 1:
        fixes.append(f"data.max_batch_length={fitting_rows * samples} ({fitting_rows} rows of {samples} samples)")
    else:
        fixes.append("data.max_sample_size (not one row fits)")
    if run_fields.get("remat") != "layer":
        fixes.append("run.remat=" + ("dots or layer" if run_fields.get("remat") == "none" else "layer"))
    if run_fields.get("layer_loop") == "unroll":
        fixes.append("run.layer_loop=scan")
    return " or ".join(fixes)


def over_budget_line(record: AotRecord, run_fields: dict) -> str:
    """The one line for a shape that does not fit."""
    memory = record.memory
    return (
        f"{record.target}: batch shape {record.shape['batch_per_device']} x {record.shape['samples']} samples per "
        f"device ({record.phase} phase) needs {memory['total'] / GIB:.2f} GiB per device, "
        f"{memory['available'] / GIB:.2f} GiB available; to fit, set {fit_advice(record, run_fields)}"
    )


def format_table(records: list[AotRecord]) -> str:
    """A readable table of the records, with what the figures are built from."""
    header = (
        f"{'target':<16} {'shape (rows x samples)':<22} {'phase':<8} {'fits':<4} {'compile':>8} {'args':>7} "
        f"{'temps':>8} {'total/usable GiB':>17} {'free':>5} {'TFLOP':>7} {'GB':>7} "
        f"{'kernels mm/conv/attn/coll/other':>32} {'bound':>9} {'audio s/s':>9}"
    )
    lines = [header]
    for r in records:
        m = r.memory
        shape = f"{r.shape['batch_per_device']} x {r.shape['samples']} ({r.shape['seconds']:.1f} s)"
        used = f"{m['total'] / GIB:.2f}/{m['available'] / GIB:.2f}" if m else "-"
        free = f"{m['headroom_percent']:.0f}%" if m else "-"
        if r.kernels:
            k = r.kernels
            kernels = f"{k['matmul']}/{k['convolution']}/{k['attention']}/{k['collective']}/{k['other']}"
            bound = f"{r.bound['step_seconds'] * 1e3:.1f} ms"
            audio = f"{r.bound['audio_seconds_per_second_per_device']:.0f}"
            flops, gbytes = f"{r.flops / 1e12:.2f}", f"{r.bytes_accessed / 1e9:.1f}"
        else:
            kernels = bound = audio = flops = gbytes = "-"
        lines.append(
            f"{r.target:<16} {shape:<22} {r.phase:<8} {'yes' if r.fits else 'NO':<4} {r.compile_seconds:>7.1f}s "
            f"{m.get('arguments', 0) / GIB:>6.2f}G {m.get('temporaries', 0) / GIB:>7.2f}G {used:>17} {free:>5} "
            f"{flops:>7} {gbytes:>7} {kernels:>32} {bound:>9} {audio:>9}"
        )
    lines += [
        "",
        "per device and per step. TFLOP: " + STEP_FLOPS_SOURCE + ".",
        "GB: " + BYTES_SOURCE + ". kernels: launches per step.",
        "bound: " + BOUND_NOTE + "; audio s/s: audio seconds per second per device at that bound.",
    ]
    return "\n".join(lines)
