"""Run the JAX train step on given batches, starting from a reference model's weights; the cases the step
parity tests share (small models crossing freeze_step and the phases of the EMA schedules)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import OptimizerConfig
from spidr_jax.convert.torch_layout import state_dict_to_tree, tree_to_state_dict
from spidr_jax.models.layer_stack import LayerExecution
from spidr_jax.pretrained import model_from_tree
from spidr_jax.sharding import data_mesh, replicated
from spidr_jax.train.state import COMPUTE_DTYPES, TrainState, new_train_state
from spidr_jax.train.step import StepDefinition, compile_train_step
from tests.reference import SMALL

NO_DROPOUT = {"encoder_dropout": 0.0, "encoder_attention_dropout": 0.0, "encoder_layer_drop": 0.0}
CASES = {
    # SpidR: 1 - decay = 0.1 exp(-step / 2) falls below 1e-2 at step 5; the extractor freezes after step 3.
    "spidr": SMALL
    | NO_DROPOUT
    | {"ema_start_decay": 0.9, "ema_timescale": 2.0, "ema_threshold": 1e-2, "freeze_step": 3},
    # DinoSR: linear decay up to step 2, final decay until freeze_step 4, then teacher frozen (decay 1).
    "dinosr": SMALL
    | NO_DROPOUT
    | {"ema_start_decay": 0.9, "ema_final_decay": 0.99, "ema_final_step": 2, "freeze_step": 4, "codebook_decay": 0.8},
}
OPTIMIZER = OptimizerConfig(
    lr=2e-3, warmup_steps=2, hold_steps=1, decay_steps=3, max_norm=1.0, dtype="float32", scheduler="tristage"
)
FRAMES, SAMPLES = 49, 1000  # SMALL's extractor has a total stride of 20


def jax_train(
    torch_state: dict,
    cfg: DinoSRConfig,
    opt: OptimizerConfig,
    batches,
    *,
    devices=None,
    seed=0,
    execution: LayerExecution | None = None,
):
    """Per-step metrics and reference-layout state_dicts of the JAX step over (waveforms, dense mask[, lengths]).

    `execution`: how the transformer layers run (default: the platform's).
    """
    tree = state_dict_to_tree(torch_state, cfg)
    model = model_from_tree(cfg, tree, dtype=COMPUTE_DTYPES[opt.dtype])
    if execution is not None:
        model.set_layer_execution(execution)
    mesh = data_mesh(devices or jax.devices()[:1])
    split, state = new_train_state(model, opt, seed)
    sharding = replicated(mesh, state)
    state = jax.device_put(state, sharding)
    step = compile_train_step(StepDefinition(split, cfg, opt, mesh), sharding)
    records, snapshots = [], []
    for waveforms, mask, *lengths in batches:
        frozen = int(state.step) >= cfg.freeze_step
        batch = {"waveforms": jnp.asarray(waveforms), "mask": jnp.asarray(mask)}
        if lengths:  # a zero-padded batch: the samples of each row
            batch["lengths"] = jnp.asarray(lengths[0])
        state, metrics = step(state, batch, extractor_frozen=frozen)
        records.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        snapshots.append(state_dict_of(state, cfg))
    return records, snapshots, state


def state_dict_of(state: TrainState, cfg: DinoSRConfig) -> dict[str, np.ndarray]:
    """The train state's weights in the reference's state_dict layout."""
    tree = jax.device_get(
        {
            **state.params,
            "teacher": state.teacher,
            "codebooks": state.codebooks,
            "current_step": np.asarray(state.step, np.int32),
        }
    )
    return tree_to_state_dict(tree, cfg)
