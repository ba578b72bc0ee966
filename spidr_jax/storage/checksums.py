"""Checksums and finiteness of array trees, computed on the devices where the arrays live.

A checkpoint records the checksum of every array it saves; a restore recomputes them and compares, so bytes
damaged on disk (a disk or copy error, a partial overwrite) are caught instead of being trained on. Each array
gets two 32-bit sums of its bit patterns, one plain and one position-weighted: changing any element changes
them (but for a vanishing chance), and as integer sums they do not depend on how the array is sharded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# An odd multiplier spreads positions over the 32 bits (Knuth's multiplicative hash constant).
_POSITION_MULTIPLIER = np.uint32(2654435761)
_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}


def _bits(leaf: jax.Array) -> jax.Array:
    """The leaf's bit patterns as uint32, one per element (bools and narrow types widened)."""
    if leaf.dtype == jnp.bool_:
        return leaf.astype(jnp.uint32).ravel()
    unsigned = _UNSIGNED[leaf.dtype.itemsize]
    return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32).ravel()


def _leaf_checksum(leaf: jax.Array) -> jax.Array:
    bits = _bits(leaf)
    positions = jnp.arange(bits.size, dtype=jnp.uint32) * _POSITION_MULTIPLIER + jnp.uint32(1)
    return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * positions, dtype=jnp.uint32)])


def _leaf_finite(leaf: jax.Array) -> jax.Array:
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.bool_(True)  # noqa: FBT003 - a traced constant
    return jnp.all(jnp.isfinite(leaf))


_checksums = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))
_finite = jax.jit(lambda tree: jax.tree.map(_leaf_finite, tree))


def _key_name(key: Any) -> str:  # noqa: ANN401
    for attribute in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _by_path(tree: Any) -> dict[str, Any]:  # noqa: ANN401
    """Leaves by "a/b/0" paths: a layer index reads the same as an int key and as the str key Orbax restores."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(key) for key in path): leaf for path, leaf in flat}


def tree_checksums(tree: Any) -> dict[str, list[int]]:  # noqa: ANN401
    """``{leaf path: [sum, weighted sum]}`` of every array of a tree (the same on every process)."""
    sums = jax.device_get(_checksums(tree))
    return {path: [int(value) for value in np.asarray(leaf)] for path, leaf in _by_path(sums).items()}


def checksum_mismatch(tree: Any, expected: dict[str, list[int]]) -> str | None:  # noqa: ANN401
    """The path of the first array whose checksum differs from `expected` (or is missing there), else None."""
    for path, sums in tree_checksums(tree).items():
        if expected.get(path) != sums:
            return path
    return None


def first_non_finite(tree: Any) -> str | None:  # noqa: ANN401
    """The path of the first floating-point array holding a NaN or an infinity, else None."""
    for path, finite in _by_path(jax.device_get(_finite(tree))).items():
        if not bool(finite):
            return path
    return None
