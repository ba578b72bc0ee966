"""The train state: one pytree holding everything a training step reads and writes.

The NNX model is split once into a static graph definition and plain nested dicts of arrays: trainable params
(extractor, projection, student, heads, mask embedding), the EMA teacher, and the codebook statistics. The step
merges them back into a model to run its forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import OptimizerConfig
from spidr_jax.models import DinoSR, build_model
from spidr_jax.models.codebooks import CodebookState
from spidr_jax.models.ssl import StepCounter
from spidr_jax.train.loss_scale import LossScale, init_loss_scale
from spidr_jax.train.optimizer import adamw

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@struct.dataclass
class TrainState:
    """Student params, EMA teacher, codebooks, optimizer state, step, RNG key and loss scale."""

    params: dict  # {"feature_extractor", "feature_projection", "student", "heads", "mask_embedding"}
    teacher: dict  # the teacher transformer (same structure as params["student"])
    codebooks: dict  # {"sums": (C, K, D), "counts": (C, K)}
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps done
    rng: jax.Array  # PRNG key data (uint32) for dropout and layer drop
    loss_scale: LossScale


@dataclass(frozen=True)
class ModelSplit:
    """What is needed to rebuild the model from the train state's dicts (static: closed over by the step)."""

    graphdef: nnx.GraphDef
    counter: dict

    def merge(self, params: dict, teacher: dict, codebooks: dict) -> DinoSR:
        """The model holding these arrays."""
        return nnx.merge(self.graphdef, {"teacher": teacher}, params, {"codebooks": codebooks}, self.counter)


def split_model(model: DinoSR) -> tuple[ModelSplit, dict, dict, dict]:
    """(split, params, teacher, codebooks) of a model."""
    graphdef, teacher, params, codebooks, counter = nnx.split(
        model, nnx.PathContains("teacher"), nnx.Param, CodebookState, StepCounter
    )
    pure = nnx.to_pure_dict
    return ModelSplit(graphdef, pure(counter)), pure(params), pure(teacher)["teacher"], pure(codebooks)["codebooks"]


def new_train_state(model: DinoSR, opt_cfg: OptimizerConfig, seed: int) -> tuple[ModelSplit, TrainState]:
    """A train state at step 0 around a model's weights (fresh or converted), with a fresh optimizer."""
    split, params, teacher, codebooks = split_model(model)
    state = TrainState(
        params=params,
        teacher=teacher,
        codebooks=codebooks,
        opt_state=jax.jit(adamw(opt_cfg).init)(params),
        step=jnp.int32(0),
        rng=jax.random.key_data(jax.random.key(seed)),
        loss_scale=init_loss_scale(enabled=opt_cfg.mixed_precision),
    )
    return split, state


def init_model(model_cfg: DinoSRConfig, opt_cfg: OptimizerConfig, seed: int) -> DinoSR:
    """A freshly initialized model computing in the optimizer config's dtype."""
    return build_model(model_cfg, seed=seed, dtype=COMPUTE_DTYPES[opt_cfg.dtype])
