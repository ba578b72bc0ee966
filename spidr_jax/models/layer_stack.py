"""Running the transformer's layers: one compiled layer body scanned over the stacked layer weights.

Unrolled, XLA compiles (and on GPUs autotunes) each of the 12 layers of a base model separately, for the student
forward, its backward and the teacher forward. Scanned, it compiles the layer once per pass. The weights stay one
entry per layer in the model (the converter's, checkpoints' and workdirs' layout); they are stacked when the layers
run, inside the compiled function, and the gradient of the stack flows back to each layer's own entry.

Both ways run the same body with the same per-layer dropout keys, so they compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

RematPolicy = Literal["none", "layer", "dots"]

# What the backward pass keeps of a layer's forward pass: everything, nothing (recompute the layer), or the
# outputs of its matrix multiplications (recompute the cheap elementwise work between them).
_REMAT_POLICIES: dict[str, Callable | None] = {
    "layer": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclass(frozen=True)
class LayerExecution:
    """How the layers run: scanned (one compiled body) or unrolled, and what is rematerialized for the backward."""

    scan: bool = True
    remat: RematPolicy = "none"

    def __post_init__(self) -> None:
        if self.remat not in ("none", *_REMAT_POLICIES):
            raise ValueError(f"remat must be one of none, {', '.join(_REMAT_POLICIES)}; got {self.remat!r}")

    @classmethod
    def from_config(cls, layer_loop: str, remat: RematPolicy, platform: str) -> LayerExecution:
        """`run.layer_loop` ("auto", "scan", "unroll") and `run.remat` on `platform` ("cpu", "gpu", "tpu")."""
        scan = layer_loop == "scan" or (layer_loop == "auto" and platform != "cpu")  # CPU: unrolled steps faster
        return cls(scan=scan, remat=remat)


def run_layer_stack(
    layers: list[nnx.Module],
    x: jax.Array,
    frame_mask: jax.Array | None,
    *,
    keys: jax.Array | None,
    dropped: jax.Array | None,
    execution: LayerExecution,
    deterministic: bool,
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """Run `layers` in order: (last hidden state, each layer's output, each layer's feed-forward output).

    `keys` (L, key) are the layers' dropout keys (None when deterministic); `dropped` (L,) bool marks the layers
    that layer drop skips: they still run (their outputs are reported) but the hidden state passes them unchanged.
    """
    splits = [nnx.split(layer) for layer in layers]

    def layer_body(graphdef: nnx.GraphDef) -> Callable:
        def body(hidden: jax.Array, per_layer: tuple) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            state, key, drop = per_layer
            layer_rngs = None if key is None else nnx.Rngs(dropout=key)
            out, layer_result = nnx.merge(graphdef, state)(
                hidden, frame_mask, deterministic=deterministic, rngs=layer_rngs
            )
            return (out if drop is None else jnp.where(drop, hidden, out)), (out, layer_result)

        if execution.remat == "none":
            return body
        return jax.checkpoint(body, policy=_REMAT_POLICIES[execution.remat], prevent_cse=not execution.scan)

    graphdef = splits[0][0]
    if execution.scan and len(layers) > 1 and all(other == graphdef for other, _ in splits[1:]):
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(state for _, state in splits))
        x, (outputs, layer_results) = jax.lax.scan(layer_body(graphdef), x, (stacked, keys, dropped))
        return x, list(outputs), list(layer_results)

    outputs, layer_results = [], []
    for i, (graphdef, state) in enumerate(splits):
        key = None if keys is None else keys[i]
        drop = None if dropped is None else dropped[i]
        x, (out, layer_result) = layer_body(graphdef)(x, (state, key, drop))
        outputs.append(out)
        layer_results.append(layer_result)
    return x, outputs, layer_results
