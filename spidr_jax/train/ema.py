"""The EMA teacher update: teacher <- lerp(teacher, student, weight); excluded layers are copied instead."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from spidr_jax.train.optimizer import dotted_paths


def lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
    """torch.lerp's formula (two branches, for accuracy on both ends)."""
    return jnp.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight))


def update_teacher(teacher: dict, student: dict, weight: jax.Array, exclude: Sequence[str]) -> dict:
    """One EMA step of the teacher transformer towards the student transformer (both dicts of one Transformer).

    Nothing changes when `weight` is 0 (the reference only updates while 0 < decay < 1); layers whose path starts
    with one of `exclude` (the positional convolution by default) are copied from the student.
    """
    active = weight > 0

    def update(name: str, t: jax.Array, s: jax.Array) -> jax.Array:
        if any(name.startswith(prefix) for prefix in exclude):
            return jnp.where(active, s, t)
        return jnp.where(active, lerp(t, s, weight.astype(t.dtype)), t)

    return jax.tree.map(update, dotted_paths(teacher), teacher, student)
