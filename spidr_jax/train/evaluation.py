"""Validation: loss and perplexities of the masked-prediction objective in eval mode.

As the reference's validate.py: per batch, then averaged over batches. Dropout is off, codebooks are not updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spidr_jax.models import codebooks as cb
from spidr_jax.models.objective import objective_metrics, objective_sums
from spidr_jax.train.state import ModelSplit

Batch = dict[str, np.ndarray]


def eval_step_function(split: ModelSplit, mesh: Mesh) -> Callable[..., dict[str, jax.Array]]:
    """Jitted (params, teacher, codebooks, batch) -> per-batch loss/ppl; filler rows (real=False) do not count."""
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def evaluate(params: dict, teacher: dict, codebooks: dict, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model = split.merge(params, teacher, codebooks)
        mask = batch["mask"] & batch["real"][:, None] if "real" in batch else batch["mask"]
        prediction = model.masked_prediction(
            batch["waveforms"], batch["mask"], lengths=batch.get("lengths"), channel_mask=batch.get("channel_mask")
        )
        labels = cb.assign(codebooks["sums"], codebooks["counts"], prediction.targets)
        metrics = objective_metrics(objective_sums(prediction.log_probs, labels, mask))
        return {"loss": metrics.loss, "target_ppl": metrics.target_ppl, "pred_ppl": metrics.pred_ppl}

    return jax.jit(
        evaluate, in_shardings=(replicated, replicated, replicated, batch_sharding), out_shardings=replicated
    )


def validate(
    evaluate: Callable[..., dict[str, jax.Array]],
    params: dict,
    teacher: dict,
    codebooks: dict,
    batches: Iterable[dict[str, jax.Array]],
) -> dict[str, float]:
    """Mean over batches of each batch's loss and perplexities."""
    results = [evaluate(params, teacher, codebooks, batch) for batch in batches]
    if not results:
        return {}
    host = jax.device_get(results)
    return {name: float(np.mean([r[name] for r in host])) for name in host[0]}
