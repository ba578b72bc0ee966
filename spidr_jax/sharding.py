"""Device meshes: one 'data' axis over every device of every process."""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (all devices by default), with Auto axes."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh, tree: object) -> object:
    """A sharding for every leaf of `tree`: replicated over the mesh (parameters and train state)."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)
