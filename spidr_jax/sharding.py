"""Device meshes: one 'data' axis over every device of every process."""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (all devices by default), with Auto axes."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
