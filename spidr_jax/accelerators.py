"""Which JAX platform a process uses when nobody said: the CPU on a machine without accelerators.

With `libtpu` or JAX's CUDA plugin installed (the `aot` extra brings both, to compile for TPU slices and GPU nodes
from any machine), JAX tries every platform it finds at its first use of a device: on a machine without a TPU or a
GPU, libtpu prints warnings about its host names and the CUDA plugin a traceback about cuDNN, and the start takes
longer. `use_cpu_without_accelerator()` runs when `spidr_jax` is imported, before JAX picks its backends: when
`JAX_PLATFORMS` is unset and the machine shows no TPU, NVIDIA or AMD device, it selects the CPU, exactly what JAX
would have ended with, without the attempts. It reads only device files; it never starts a backend.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips appear as PCI devices of Google's vendor id (as jax's own check reads them)
# Device files of the GPU drivers: NVIDIA (also inside containers), AMD ROCm, and WSL's GPU bridge.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def has_accelerator() -> bool:
    """Whether this machine shows a TPU chip or a GPU driver's device."""
    if any(Path(path).exists() for path in GPU_DEVICE_FILES):
        return True
    for vendor_file in Path("/sys/bus/pci/devices").glob("*/vendor"):
        try:
            if vendor_file.read_text(encoding="ascii").strip() == GOOGLE_PCI_VENDOR:
                return True
        except OSError:
            continue
    return False


def use_cpu_without_accelerator() -> bool:
    """Select JAX's CPU platform when `JAX_PLATFORMS` is unset and no accelerator is present; True if it did.

    Sets `JAX_PLATFORMS=cpu` in the environment (so worker processes inherit it) and, when JAX is already
    imported, its `jax_platforms` option (read when the backends start; after that it changes nothing).
    """
    if "JAX_PLATFORMS" in os.environ or has_accelerator():
        return False
    os.environ["JAX_PLATFORMS"] = "cpu"
    jax = sys.modules.get("jax")
    if jax is not None and getattr(jax, "config", None) is not None and jax.config.jax_platforms is None:
        jax.config.update("jax_platforms", "cpu")
    return True
