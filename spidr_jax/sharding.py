"""Device meshes: one 'data' axis over every device of every process."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (all devices by default), with Auto axes.

    Devices of several TPU slices (multi-slice) are ordered slice by slice, each slice in its physical order
    (`jax.make_mesh` alone refuses devices of several slices).
    """
    devices = list(jax.devices() if devices is None else devices)
    num_slices = len({getattr(device, "slice_index", 0) for device in devices})
    if num_slices > 1:
        grid = mesh_utils.create_hybrid_device_mesh((len(devices) // num_slices,), (num_slices,), devices)
        return Mesh(grid.reshape(-1), ("data",), axis_types=(AxisType.Auto,))
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh, tree: object) -> object:
    """A sharding for every leaf of `tree`: replicated over the mesh (parameters and train state)."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def put_replicated(tree: object, mesh: Mesh) -> object:
    """Every leaf of `tree` replicated over the mesh, with the same values on every process.

    Leaves already placed so are kept. Others go through host memory: with one device per process,
    `jax.device_put` of a device array onto a multi-process sharding builds an array whose shards cannot be
    read back (Orbax fails on it at the first save), while a host array is placed correctly.
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf: object) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        return jax.device_put(np.asarray(leaf), sharding)

    return jax.tree.map(put, tree)
