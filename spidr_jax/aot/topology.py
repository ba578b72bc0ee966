"""The devices of a target that is not attached: JAX's topology descriptions, from libtpu or the CUDA plugin.

`jax.experimental.topologies.get_topology_desc` asks a platform's compiler plugin for the devices of a named
topology. They cannot run anything, but a `jax.jit` function lowered over a mesh of them compiles for that hardware:
the compiler's memory plan, cost analysis and program are those the real slice or node would get.

The process running this must never start its own accelerator: `spidr_jax.aot` sets `JAX_PLATFORMS=cpu` before
JAX starts, and topologies are built from the plugins directly.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from importlib import resources

import jax
from jax.experimental import topologies

from spidr_jax.aot.targets import Target
from spidr_jax.errors import UsageError

AOT_EXTRA = 'pip install -e ".[aot]"'  # brings libtpu and the CUDA compiler plugin at the versions jax needs


class CompilerUnavailableError(UsageError):
    """No compiler for the target's platform is installed (exit code 2, like a misspelled target)."""


def quiet_libtpu(accelerator_type: str) -> None:
    """Tell libtpu it runs on one host of a known slice, so that it prints no warnings when it loads.

    Also let other processes load libtpu meanwhile (its lock file guards a TPU's devices, never used here).

    Without these, libtpu looks for a Cloud TPU VM's metadata and prints warnings about TPU_WORKER_HOSTNAMES and
    InitGoogle. Set only in this process (and only where unset): it never initializes a TPU here.
    """
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu lets one process at a time load it (a lock file in /tmp): several checks may run at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator_type)


@functools.cache
def target_devices(target: Target) -> tuple[jax.Device, ...]:
    """The devices of `target`, every host and slice, in the order the compiler numbers them."""
    if target.platform == "tpu":
        if importlib.util.find_spec("libtpu") is None:
            raise CompilerUnavailableError(f"--target={target.name} needs libtpu to compile for TPUs: {AOT_EXTRA}")
        quiet_libtpu(target.name.replace("v5e-", "v5litepod-"))
        topology = _describe(
            target,
            platform="tpu",
            topology_name=target.topology,
            chip_config_name=target.chip_config,
            chips_per_host_bounds=target.host_bounds,
            num_slices=target.num_slices,
            wrap=target.wrap,
        )
    else:
        if importlib.util.find_spec("jax_plugins.xla_cuda13") is None:
            raise CompilerUnavailableError(
                f"--target={target.name} needs JAX's CUDA compiler plugin (jax-cuda13-plugin): {AOT_EXTRA}"
            )
        topology = _describe(target, platform="cuda", target_config=gpu_target_config(target), topology=target.topology)
    devices = tuple(topology.devices)
    if len(devices) != target.num_devices:
        raise CompilerUnavailableError(
            f"--target={target.name}: the compiler describes {len(devices)} devices, expected {target.num_devices}"
        )
    return devices


def gpu_target_config(target: Target) -> str:
    """The GPU's `GpuTargetConfigProto` in text form, shipped with the package (spidr_jax/aot/gpu_specs/)."""
    return resources.files("spidr_jax.aot").joinpath("gpu_specs", target.gpu_spec).read_text(encoding="utf-8")


def _describe(target: Target, **options: object) -> topologies.TopologyDescription:
    try:
        return topologies.get_topology_desc(**options)
    except Exception as error:  # noqa: BLE001 - the plugin's errors (a topology or config it cannot read): one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CompilerUnavailableError(
            f"--target={target.name}: this jaxlib ({jax.__version__}) cannot compile for it: {first_line}"
        ) from None
