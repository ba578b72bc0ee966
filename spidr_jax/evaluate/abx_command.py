"""`python -m spidr_jax.evaluate abx`: the ABX error of a layer's features or units on a ZeroSpeech item file."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.scan import at_model_rate
from spidr_jax.evaluate.model_units import collect_outputs
from spidr_jax.evaluate.units_command import BATCHING
from spidr_jax.models.layer_outputs import check_layer, features_at, units_at
from spidr_jax.pretrained import describe_checkpoint, load_pretrained


def abx_command(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Print the ABX error rate."""
    from spidr_jax.evaluate.abx import abx_error  # noqa: PLC0415 (needs the optional fastabx)

    model = load_pretrained(args.checkpoint, step=args.step, teacher=False)
    say(f"checkpoint: {describe_checkpoint(args.checkpoint, model)}")
    check_layer(model.config, args.layer, units=args.units)
    rows, _ = at_model_rate(read_manifest(args.manifest))
    output = units_at(args.layer, model.config) if args.units else features_at(args.layer)
    features, failed = collect_outputs(model, rows, output, BATCHING)
    for location, reason in list(failed.items())[:5]:
        say(f"failed: {location}: {reason}")
    error = abx_error(args.item, features, speaker=args.speaker)
    kind = "units" if args.units else "features"
    print(f"ABX {args.speaker} speaker, layer {args.layer} {kind}: {100 * error:.2f}% error")
