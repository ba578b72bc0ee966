"""AdamW as the reference builds it: which parameters it updates, torch-style clipping, and the update itself.

The learning rate is applied from the train step's own counter rather than from optax's: the reference's scheduler
advances even on steps that GradScaler skips, while Adam's bias correction only counts applied steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from spidr_jax.config.model import DinoSRConfig, SpidRConfig
from spidr_jax.config.run import OptimizerConfig

TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ adds it to the norm


def dotted_paths(tree: dict) -> dict:
    """A tree of the same structure whose leaves are their dotted paths ("student.layers.0.layer_norm.scale")."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), tree
    )


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    # Plain prefix matching, as the reference matches parameter names.
    return any(name.startswith(prefix) for prefix in prefixes)


def unused_by_loss(model_cfg: DinoSRConfig) -> str:
    """The parameter prefix the loss never reaches (SpidR's last norm); torch gives it no gradient, so no update."""
    if not isinstance(model_cfg, SpidRConfig):
        return ""
    if model_cfg.encoder_layer_norm_first:
        return "student.layer_norm"
    return f"student.layers.{model_cfg.encoder_num_layers - 1}.final_layer_norm"


def update_mask(params: dict, opt_cfg: OptimizerConfig, model_cfg: DinoSRConfig) -> dict:
    """True for parameters AdamW updates (weight decay included): not excluded, not unused by the loss."""
    unused = unused_by_loss(model_cfg)
    return jax.tree.map(
        lambda name: not _matches(name, opt_cfg.exclude_from_optimizer) and not (unused and _matches(name, [unused])),
        dotted_paths(params),
    )


def freeze_mask(params: dict, opt_cfg: OptimizerConfig) -> dict:
    """True for parameters that leave the optimizer at freeze_step (feature extractor and projection)."""
    return jax.tree.map(lambda name: _matches(name, opt_cfg.to_freeze), dotted_paths(params))


def adamw(opt_cfg: OptimizerConfig) -> optax.GradientTransformation:
    """Adam moments and decoupled weight decay; the caller multiplies by -lr."""
    beta1, beta2 = opt_cfg.betas
    return optax.chain(
        optax.scale_by_adam(b1=beta1, b2=beta2, eps=opt_cfg.eps),
        optax.add_decayed_weights(opt_cfg.weight_decay),
    )


def global_norm(grads: dict) -> jax.Array:
    """L2 norm of all gradients.

    torch's clip_grad_norm_ only sees parameters that received a gradient; here those are exactly zero (frozen
    extractor, unused norm), which adds nothing to the norm.
    """
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))


def clip_coefficient(norm: jax.Array, max_norm: float) -> jax.Array:
    """Clip factor as torch computes it: min(1, max_norm / (norm + 1e-6))."""
    return jnp.minimum(jnp.float32(max_norm) / (norm + TORCH_CLIP_EPS), 1.0)
