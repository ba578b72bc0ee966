"""Run in a fresh process with 8 simulated CPU devices: the step on 1 device vs on 8, same global batches.

Prints a JSON report; tests/test_step_sharding.py asserts on it. Dropout and layer drop are ON, so this also shows
that the random masks do not depend on the device count.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import numpy as np

from spidr_jax.config import DinoSRConfig, OptimizerConfig, SpidRConfig
from tests.reference import SMALL, reference_model
from tests.step_harness import jax_train
from tests.train_reference import dense_mask, random_batches


def main(model_type: str) -> None:
    """Compare 1-device and 8-device runs and print the largest differences."""
    fields = SMALL | {"freeze_step": 2, "encoder_layer_drop": 0.1 if model_type == "dinosr" else 0.0}
    cfg = (SpidRConfig if model_type == "spidr" else DinoSRConfig)(**fields)
    reference, _ = reference_model(model_type, seed=0, **fields)
    initial = {k: v.numpy() for k, v in reference.state_dict().items()}
    opt = OptimizerConfig(lr=1e-3, warmup_steps=1, dtype="float32", scheduler="constant")
    batches = [(w, dense_mask(i, 49)) for w, i in random_batches(3, 8, 1000, 49, 30, seed=2)]
    one, one_states, _ = jax_train(initial, cfg, opt, batches, devices=jax.devices()[:1])
    eight, eight_states, final = jax_train(initial, cfg, opt, batches, devices=jax.devices())
    report = {
        "devices": len(final.params["mask_embedding"].sharding.device_set),
        "metrics": [{k: [a[k], b[k]] for k in a} for a, b in zip(one, eight, strict=True)],
        "max_param_diff": max(
            float(np.max(np.abs(a[k] - b[k]))) for a, b in zip(one_states, eight_states, strict=True) for k in a
        ),
        "max_param_scale": max(float(np.max(np.abs(v))) for v in one_states[-1].values()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
