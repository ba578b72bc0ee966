"""The training step: one pure function (state, batch) -> (state, metrics), compiled once per batch shape.

In order, as the reference does per batch: the student predicts codebook assignments of the teacher's layers on
the masked frames; the loss is the mean cross-entropy over the masked frames of the global batch; gradients are
unscaled (16-bit compute), clipped like torch and applied by AdamW (skipped if not finite); the teacher moves
towards the new student; the codebooks take an EMA step from the assignment statistics of all devices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import OptimizerConfig
from spidr_jax.models import codebooks as cb
from spidr_jax.models.objective import ObjectiveSums, objective_metrics, objective_sums
from spidr_jax.train.ema import update_teacher
from spidr_jax.train.ema_schedule import ema_decay_schedule, ema_weight_schedule
from spidr_jax.train.loss_scale import all_finite, unscale, update_loss_scale
from spidr_jax.train.optimizer import adamw, clip_coefficient, freeze_mask, global_norm, update_mask
from spidr_jax.train.schedules import learning_rate_schedule
from spidr_jax.train.state import ModelSplit, TrainState

# "waveforms" (B, S) float32, "mask" (B, T) bool; optional: "channel_mask" (B, D) bool, "lengths" (B,) int32 (the
# samples of each row of a zero-padded batch, data.enable_padding).
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class StepDefinition:
    """Everything static the step needs: how to rebuild the model, the configs, and the data mesh."""

    split: ModelSplit
    model_cfg: DinoSRConfig
    opt_cfg: OptimizerConfig
    mesh: Mesh


def codebook_statistics(
    mesh: Mesh, labels: jax.Array, targets: jax.Array, mask: jax.Array, size: int
) -> tuple[jax.Array, jax.Array]:
    """Assignment counts (C, K) and target sums (C, K, D) over the masked frames of all devices.

    Each device reduces its own frames, then one psum over 'data' sums them: the result does not depend on the
    device count, and the one-hot assignments never leave their device.
    """

    def local(labels: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        counts, sums = cb.assignment_statistics(labels, targets, mask, size)
        return jax.lax.psum(counts, "data"), jax.lax.psum(sums, "data")

    batch_axis = PartitionSpec(None, "data")
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(batch_axis, batch_axis, PartitionSpec("data")),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )(labels, targets, mask)


def train_step(
    definition: StepDefinition, state: TrainState, batch: Batch, *, extractor_frozen: bool
) -> tuple[TrainState, Metrics]:
    """One optimizer step. `extractor_frozen` (step >= freeze_step) stops gradients into extractor+projection."""
    model_cfg, opt_cfg = definition.model_cfg, definition.opt_cfg
    rng, dropout_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    mask = batch["mask"]
    num_masked = jnp.sum(mask.astype(jnp.float32))
    frozen = freeze_mask(state.params, opt_cfg)

    def loss_fn(params: dict) -> tuple[jax.Array, tuple[ObjectiveSums, jax.Array, jax.Array]]:
        if extractor_frozen:
            params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        model = definition.split.merge(params, state.teacher, state.codebooks)
        prediction = model.masked_prediction(
            batch["waveforms"],
            mask,
            lengths=batch.get("lengths"),
            channel_mask=batch.get("channel_mask"),
            deterministic=False,
            rngs=nnx.Rngs(dropout=dropout_key),
        )
        labels = cb.assign(state.codebooks["sums"], state.codebooks["counts"], prediction.targets)
        sums = objective_sums(prediction.log_probs, labels, mask)
        loss = sums.loss / jnp.maximum(num_masked, 1.0)
        return loss * state.loss_scale.scale, (sums, labels, prediction.targets)

    scaled_grads, (sums, labels, targets) = jax.grad(loss_fn, has_aux=True)(state.params)
    scaling = opt_cfg.mixed_precision  # the reference's GradScaler is on exactly then
    grads = unscale(scaled_grads, state.loss_scale) if scaling else scaled_grads
    finite = all_finite(grads) if scaling else jnp.bool_(True)  # noqa: FBT003
    grad_norm = global_norm(grads)
    grads = jax.tree.map(lambda g: g * clip_coefficient(grad_norm, opt_cfg.max_norm), grads)

    # AdamW on the parameters it owns; the caller-side -lr uses the step counter (see optimizer.py).
    lr = learning_rate_schedule(opt_cfg)(state.step)
    owned = update_mask(state.params, opt_cfg, model_cfg)
    keep = jax.tree.map(lambda o, f: o and not (f and extractor_frozen), owned, frozen)

    def apply_update() -> tuple[dict, object]:
        updates, opt_state = adamw(opt_cfg).update(grads, state.opt_state, state.params)
        return jax.tree.map(lambda p, u, k: p - lr * u if k else p, state.params, updates, keep), opt_state

    if scaling:  # a step with non-finite gradients is skipped, as GradScaler does
        params, opt_state = jax.lax.cond(finite, apply_update, lambda: (state.params, state.opt_state))
    else:
        params, opt_state = apply_update()

    step = state.step + 1
    weight = ema_weight_schedule(model_cfg)(step)
    teacher = update_teacher(state.teacher, params["student"], weight, model_cfg.ema_exclude_layers)

    counts, target_sums = codebook_statistics(definition.mesh, labels, targets, mask, model_cfg.codebook_size)
    new_sums, new_counts = cb.ema_update(
        state.codebooks["sums"], state.codebooks["counts"], counts, target_sums, model_cfg.codebook_decay
    )

    metrics = objective_metrics(sums)
    new_state = TrainState(
        params=params,
        teacher=teacher,
        codebooks={"sums": new_sums, "counts": new_counts},
        opt_state=opt_state,
        step=step,
        rng=jax.random.key_data(rng),
        loss_scale=update_loss_scale(state.loss_scale, finite, enabled=opt_cfg.mixed_precision),
    )
    return new_state, {
        "loss": metrics.loss,
        "target_ppl": metrics.target_ppl,
        "pred_ppl": metrics.pred_ppl,
        "grad_norm": grad_norm,
        "lr": lr,
        "ema_decay": ema_decay_schedule(model_cfg)(step),
        "loss_scale": state.loss_scale.scale,
        "skipped": (~finite).astype(jnp.int32),
        "codebook_usage": jnp.mean((counts > 0).astype(jnp.float32)),
        "masked_frames": num_masked,
    }


def compile_train_step(definition: StepDefinition, state_sharding: object) -> Callable[..., tuple[TrainState, Metrics]]:
    """The jitted step `(state, batch, *, extractor_frozen)`: state donated, batch sharded over 'data'."""
    replicated = NamedSharding(definition.mesh, PartitionSpec())
    batch_sharding = NamedSharding(definition.mesh, PartitionSpec("data"))

    def traced(state: TrainState, batch: Batch, frozen: bool) -> tuple[TrainState, Metrics]:
        # The model sees the mesh while traced (models.positional keeps its convolution data-parallel with it).
        with jax.sharding.use_abstract_mesh(definition.mesh.abstract_mesh):
            return train_step(definition, state, batch, extractor_frozen=frozen)

    jitted = jax.jit(
        traced,
        static_argnums=2,  # one compiled variant per phase (before/after freeze_step)
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )

    def step(state: TrainState, batch: Batch, *, extractor_frozen: bool) -> tuple[TrainState, Metrics]:
        return jitted(state, batch, extractor_frozen)

    step.lower = lambda state, batch, *, extractor_frozen: jitted.lower(state, batch, extractor_frozen)
    return step
