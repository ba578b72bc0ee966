"""Validation: loss and perplexities of the masked-prediction objective in eval mode.

As the reference's validate.py: per batch, then averaged over batches. Dropout is off, codebooks are not updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spidr_jax.data.load_batch import BAD_AUDIO
from spidr_jax.data.pipeline import TrainingData
from spidr_jax.models import codebooks as cb
from spidr_jax.models.objective import objective_metrics, objective_sums
from spidr_jax.train.state import ModelSplit, TrainState
from spidr_jax.train.workdir import global_batch

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


class SetResult(NamedTuple):
    """The scores of one validation set, and its rows that failed to decode (each replaced by another row)."""

    values: dict[str, float]
    failed: list[tuple[str, str]]

    def describe(self, name: str, step: int) -> str:
        """The line a run or `validate` prints for the set."""
        line = f"validation {name} at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in self.values.items())
        if self.failed:
            shown = "; ".join(f"{location}: {reason}" for location, reason in self.failed[:3])
            line += f" ({len(self.failed)} rows failed to decode and were replaced by others: {shown})"
        return line


def validate_set(
    evaluate: Callable[..., dict[str, jax.Array]], state: TrainState, data: TrainingData, mesh: Mesh
) -> SetResult:
    """Score one validation set's single pass (its rows that fail to decode are replaced, and reported)."""
    failed: list[tuple[str, str]] = []

    def device_batches(batches: Iterable[tuple[int, Batch]]) -> Iterator[dict[str, jax.Array]]:
        for _, batch in batches:
            failed.extend(batch.get(BAD_AUDIO, ()))
            yield global_batch(batch, mesh)

    with data.iterator(0, data.num_batches) as batches:
        values = validate(evaluate, state.params, state.teacher, state.codebooks, device_batches(batches))
    unique: dict[str, str] = {}
    for location, reason in failed:  # each file once: a bucket's last batch repeats rows to fill up
        unique.setdefault(location, reason)
    return SetResult(values, list(unique.items()))


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
