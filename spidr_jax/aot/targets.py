"""The accelerators a training step can be compiled for without them: TPU slices and NVIDIA GPU nodes, by name.

Names are the ones users reserve: `v4-N`, `v5p-N` (N TensorCores, two per chip), `v5e-N` or `v5litepod-N` and
`v6e-N` (N chips), and `a100xN`, `h100xN`, `h200xN`, `b200xN` (N GPUs, 8 per node). A `Target` says how to ask the
compiler for that hardware (a TPU topology string, chip configuration and host bounds; a GPU target-config file
and node count) and what the data sheet gives for one device: memory, peak matrix FLOP/s and memory bandwidth,
each with its source (`CHIPS`). `python -m spidr_jax.aot --list-targets` prints the table.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Literal

from spidr_jax.errors import UsageError

Platform = Literal["tpu", "gpu"]
GIB = 1024**3
DEFAULT_GPU_MEMORY_FRACTION = 0.90  # launch/'s sbatch script sets XLA_PYTHON_CLIENT_MEM_FRACTION=0.90


class UnknownTargetError(UsageError):
    """A target name that names no TPU slice or GPU node this tool knows (exit code 2)."""


@dataclass(frozen=True)
class Chip:
    """One device's data sheet: memory, dense peak FLOP/s (16-bit and 32-bit matrix inputs), HBM bandwidth."""

    name: str
    platform: Platform
    memory_bytes: int  # HBM per device (TPU: per chip; GPU: what the target config gives XLA)
    peak_flops_16bit: float  # dense bf16/fp16 matrix FLOP/s
    peak_flops_32bit: float  # float32 inputs at the default precision (TPU: bf16 passes; GPU: TF32)
    bandwidth: float  # HBM bytes/s
    source: str
    compiler_memory_bytes: int = 0  # TPU: what the compiler plans against (its RESOURCE_EXHAUSTED message says it)

    def usable_memory(self) -> int:
        """Bytes a training step may use on one device.

        TPU: the HBM the compiler allows (measured from libtpu 0.0.42.1's out-of-memory message). GPU: the share
        of the memory JAX's allocator takes, `XLA_PYTHON_CLIENT_MEM_FRACTION` (0.90 here, as launch/ sets it for
        training; JAX's own default is 0.75).
        """
        if self.platform == "tpu":
            return self.compiler_memory_bytes or self.memory_bytes
        return int(self.memory_bytes * gpu_memory_fraction())


def gpu_memory_fraction() -> float:
    """The fraction of a GPU's memory a training process may allocate (`XLA_PYTHON_CLIENT_MEM_FRACTION`)."""
    return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_GPU_MEMORY_FRACTION))


# TPU figures: Cloud TPU "System architecture" pages of each version (per chip: peak bf16 compute, HBM capacity
# and bandwidth). With JAX's default matmul precision a float32 product runs as one bf16 pass on a TPU.
# GPU figures: NVIDIA data sheets (A100 80GB SXM, H100 SXM5, H200 SXM, HGX B200), dense (no sparsity) bf16 and
# TF32 Tensor Core rates (JAX's default precision lets float32 products use TF32); memory as in the target config.
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "tpu", 32 * GIB, 275e12, 275e12, 1200e9, "cloud.google.com/tpu/docs/v4", int(30.75 * GIB)),
    "v5e": Chip("TPU v5e", "tpu", 16 * GIB, 197e12, 197e12, 819e9, "cloud.google.com/tpu/docs/v5e", int(15.75 * GIB)),
    "v5p": Chip("TPU v5p", "tpu", 95 * GIB, 459e12, 459e12, 2765e9, "cloud.google.com/tpu/docs/v5p", int(95.74 * GIB)),
    "v6e": Chip("TPU v6e", "tpu", 32 * GIB, 918e12, 918e12, 1640e9, "cloud.google.com/tpu/docs/v6e", int(31.25 * GIB)),
    "a100": Chip("NVIDIA A100 SXM4 80GB", "gpu", 85_100_068_864, 312e12, 156e12, 2039e9, "NVIDIA A100 data sheet"),
    "h100": Chip("NVIDIA H100 SXM5 80GB", "gpu", 84_942_979_072, 989.4e12, 494.7e12, 3350e9, "NVIDIA H100 data sheet"),
    "h200": Chip("NVIDIA H200 SXM 141GB", "gpu", 151_397_597_184, 989.4e12, 494.7e12, 4800e9, "NVIDIA H200 data sheet"),
    "b200": Chip("NVIDIA B200 (HGX)", "gpu", 191_514_411_008, 2250e12, 1100e12, 8000e9, "NVIDIA HGX B200 data sheet"),
}


@dataclass(frozen=True)
class TpuFamily:
    """How a TPU generation's slices are named and laid out."""

    topology_prefix: str  # the compiler's name of the generation in topology strings ("v5" is v5p)
    chip_config: str  # "megacore": the chip's two TensorCores as one device; "default": one core per chip
    cores_per_chip: int  # the slice name counts TensorCores (v4, v5p) or chips (v5e, v6e)
    dimensions: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
    host_chips: tuple[int, int, int]  # chips per host in each dimension, multi-host slices
    single_host_chips: int  # the largest slice one host drives
    max_chips: int
    source: str


TPU_FAMILIES: dict[str, TpuFamily] = {
    "v4": TpuFamily("v4", "megacore", 2, 3, (2, 2, 1), 4, 4096, "cloud.google.com/tpu/docs/v4 (slice shapes)"),
    "v5p": TpuFamily("v5", "megacore", 2, 3, (2, 2, 1), 4, 8960, "cloud.google.com/tpu/docs/v5p (slice shapes)"),
    "v5e": TpuFamily("v5e", "default", 1, 2, (2, 2, 1), 8, 256, "cloud.google.com/tpu/docs/v5e (slice shapes)"),
    "v6e": TpuFamily("v6e", "default", 1, 2, (2, 2, 1), 8, 256, "cloud.google.com/tpu/docs/v6e (slice shapes)"),
}
ALIASES = {"v5litepod": "v5e"}
# The 2-D slices of v5e and v6e, by chips: rows x columns (cloud.google.com/tpu/docs/v5e, .../v6e).
TWO_D_SHAPES = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
GPUS_PER_NODE = 8
# The target-config file of each GPU (package data in spidr_jax/aot/gpu_specs/, matched to the pinned jaxlib).
GPU_SPECS = {"a100": "a100_sxm_80.txtpb", "h100": "h100_sxm.txtpb", "h200": "h200.txtpb", "b200": "b200.txtpb"}


@dataclass(frozen=True)
class Target:
    """One named accelerator setup: how to compile for it and its per-device data sheet."""

    name: str
    chip: Chip
    num_devices: int  # JAX devices (TPU chips in megacore mode, GPUs), all slices
    num_hosts: int
    num_slices: int = 1
    topology: str = ""  # TPU: "v5:4x4x4"; GPU: "<nodes>x1x8" (each node its own NVLink domain)
    chip_config: str = ""
    host_bounds: tuple[int, int, int] = (1, 1, 1)
    wrap: tuple[bool, bool, bool] = (False, False, False)
    gpu_spec: str = ""

    @property
    def label(self) -> str:
        """The name with the number of slices when there are several ("v5p-8 x2 slices")."""
        return f"{self.name} x{self.num_slices} slices" if self.num_slices > 1 else self.name

    @property
    def platform(self) -> Platform:
        """The compiler platform: "tpu" or "gpu"."""
        return self.chip.platform

    def peak_flops(self, dtype: str) -> float:
        """The data sheet's dense matrix FLOP/s for a step computing in `dtype` ("bfloat16", "float32", ...)."""
        return self.chip.peak_flops_32bit if dtype == "float32" else self.chip.peak_flops_16bit


def parse_target(name: str, *, slices: int = 1) -> Target:
    """The target a user names (`v5p-128`, `v5litepod-8`, `h100x16`); `slices` > 1: a multi-slice TPU run."""
    if slices < 1:
        raise UnknownTargetError(f"--slices must be at least 1, got {slices}")
    text = name.strip().lower()
    if gpu := re.fullmatch(r"([a-z]\d+)x(\d+)", text):
        return _gpu_target(name, gpu.group(1), int(gpu.group(2)), slices)
    if tpu := re.fullmatch(r"(v\d+[a-z]*)-(\d+)", text):
        return _tpu_target(name, ALIASES.get(tpu.group(1), tpu.group(1)), int(tpu.group(2)), slices)
    raise UnknownTargetError(f"--target={name}: not a TPU slice (v5p-128, v5e-8) or GPU node (h100x8); {_listing()}")


def _gpu_target(name: str, model: str, count: int, slices: int) -> Target:
    if model not in GPU_SPECS:
        raise UnknownTargetError(f"--target={name}: unknown GPU {model!r}; {_listing()}")
    if count < GPUS_PER_NODE or count % GPUS_PER_NODE:
        raise UnknownTargetError(f"--target={name}: GPU targets are nodes of {GPUS_PER_NODE} ({model}x8, x16, ...)")
    if slices != 1:
        raise UnknownTargetError(f"--slices applies to TPU slices; for several GPU nodes name the GPUs ({model}x16)")
    nodes = count // GPUS_PER_NODE
    return Target(
        name=f"{model}x{count}",
        chip=CHIPS[model],
        num_devices=count,
        num_hosts=nodes,
        topology=f"{nodes}x1x{GPUS_PER_NODE}",
        gpu_spec=GPU_SPECS[model],
    )


def _tpu_target(name: str, family_name: str, size: int, slices: int) -> Target:
    family = TPU_FAMILIES.get(family_name)
    if family is None:
        raise UnknownTargetError(f"--target={name}: unknown TPU generation {family_name!r}; {_listing()}")
    if size % family.cores_per_chip:
        raise UnknownTargetError(f"--target={name}: {family_name} slices count {family.cores_per_chip} cores a chip")
    chips = size // family.cores_per_chip
    dims = _tpu_shape(family, chips)
    if dims is None:
        raise UnknownTargetError(f"--target={name}: no {family_name} slice has {size}; valid: {_sizes(family_name)}")
    if chips <= family.single_host_chips:
        host_bounds = (dims[0], dims[1], dims[2] if len(dims) == 3 else 1)  # the whole slice on one host
    else:
        host_bounds = family.host_chips
    hosts = chips // math.prod(host_bounds)
    full_torus = family.dimensions == 3 and chips >= 64
    wrap = tuple(full_torus or (family.dimensions == 2 and d >= 16) for d in (*dims, 1)[:3])
    return Target(
        name=f"{family_name}-{size}",
        chip=CHIPS[family_name],
        num_devices=chips * slices,
        num_hosts=hosts * slices,
        num_slices=slices,
        topology=f"{family.topology_prefix}:{'x'.join(map(str, dims))}",
        chip_config=family.chip_config,
        host_bounds=host_bounds,
        wrap=wrap,  # type: ignore[arg-type]
    )


def _tpu_shape(family: TpuFamily, chips: int) -> tuple[int, ...] | None:
    """The slice's chip grid, or None when the generation has no slice of that many chips."""
    if chips > family.max_chips:
        return None
    if family.dimensions == 2:
        return TWO_D_SHAPES.get(chips)
    small = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
    if chips in small:
        return small[chips]
    if chips % 64:
        return None
    # Larger slices are made of 4x4x4 cubes: the most cubic arrangement of chips / 64 of them.
    cubes = chips // 64
    best = min(
        ((a, b, cubes // (a * b)) for a in range(1, cubes + 1) for b in range(a, cubes + 1) if cubes % (a * b) == 0),
        key=lambda abc: (max(abc) / min(abc), abc),
    )
    if best[2] < best[1]:
        return None
    return tuple(4 * k for k in best)


def _sizes(family_name: str) -> str:
    family = TPU_FAMILIES[family_name]
    chips = sorted(TWO_D_SHAPES) if family.dimensions == 2 else [4, 8, 16, 32, 64, 128, 256, 512]
    shown = [f"{family_name}-{c * family.cores_per_chip}" for c in chips if c <= family.max_chips]
    return ", ".join(shown) + ("" if family.dimensions == 2 else ", ... (multiples of 128 beyond)")


def _listing() -> str:
    return "python -m spidr_jax.aot --list-targets shows them"


def example_targets() -> list[Target]:
    """A few targets of every kind, for `--list-targets`."""
    names = ["v4-8", "v4-128", "v5e-1", "v5e-8", "v5e-256", "v5p-8", "v5p-128", "v5p-1024", "v6e-8", "v6e-256"]
    names += ["a100x8", "h100x8", "h100x16", "h200x8", "b200x8"]
    return [parse_target(name) for name in names]


def describe_targets() -> str:
    """The table `--list-targets` prints: naming rules, examples, and the data sheet of every chip."""
    lines = [
        "TPU slices: v4-N and v5p-N (N TensorCores: 8, 16, 32, 64, 128, then multiples of 128), v5e-N (alias",
        "v5litepod-N) and v6e-N (N chips: 1, 4, 8, 16, 32, 64, 128, 256); --slices=K for K such slices (multi-slice).",
        "GPU nodes: a100xN, h100xN, h200xN, b200xN (N GPUs, 8 per node: x8 is one node, x16 two).",
        "",
        f"{'target':<14} {'devices':>7} {'hosts':>5}  {'topology':<12} {'chip config / spec':<18} {'host bounds':<11}",
    ]
    for target in example_targets():
        bounds = "x".join(map(str, target.host_bounds)) if target.platform == "tpu" else "-"
        lines.append(
            f"{target.name:<14} {target.num_devices:>7} {target.num_hosts:>5}  {target.topology:<12} "
            f"{target.chip_config or target.gpu_spec:<18} {bounds:<11}"
        )
    lines += [
        "",
        f"{'chip':<22} {'memory':>9} {'usable':>9} {'peak 16-bit':>12} {'peak fp32':>10} {'bandwidth':>10}  source",
    ]
    for chip in CHIPS.values():
        lines.append(
            f"{chip.name:<22} {chip.memory_bytes / GIB:>5.1f} GiB {chip.usable_memory() / GIB:>5.1f} GiB "
            f"{chip.peak_flops_16bit / 1e12:>7.0f} TF/s {chip.peak_flops_32bit / 1e12:>5.0f} TF/s "
            f"{chip.bandwidth / 1e12:>5.2f} TB/s  {chip.source}"
        )
    lines.append(
        "usable: TPU, the HBM libtpu's compiler plans against (its out-of-memory message); GPU, "
        f"XLA_PYTHON_CLIENT_MEM_FRACTION ({gpu_memory_fraction():.2f}) of the memory. Peaks are dense (no sparsity)."
    )
    lines.append("TPU slice layouts: " + "; ".join(f"{k}: {f.source}" for k, f in TPU_FAMILIES.items()))
    return "\n".join(lines)
