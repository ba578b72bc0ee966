"""Convert a reference PyTorch checkpoint to a converted model directory, or back.

    python -m spidr_jax.convert torch-to-orbax --model spidr spidr_base.pt converted/spidr_base
    python -m spidr_jax.convert orbax-to-torch converted/spidr_base spidr_base_roundtrip.pt

`convert/torch_to_orbax.py` and `convert/orbax_to_torch.py` in the repository run the same two commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spidr_jax.convert.conversion import orbax_to_torch, parse_overrides, torch_to_orbax
from spidr_jax.errors import exit_on_user_error

PROG = "python -m spidr_jax.convert"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per direction."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    directions = parser.add_subparsers(dest="direction", required=True, metavar="{torch-to-orbax,orbax-to-torch}")
    to_orbax = directions.add_parser(
        "torch-to-orbax",
        help="a .pt checkpoint (SpidR, DinoSR or the original fairseq DinoSR) to a converted model directory",
        description="Convert a reference PyTorch checkpoint (SpidR, DinoSR, or the original fairseq DinoSR) to a "
        "converted model directory (an Orbax checkpoint and config.json).",
    )
    to_orbax.add_argument(
        "--model", required=True, choices=["spidr", "dinosr", "dinosr_fairseq"], help="the checkpoint's kind"
    )
    to_orbax.add_argument("input", help="the .pt file ({'model': state_dict}, a bare state_dict, or fairseq DinoSR)")
    to_orbax.add_argument("output_dir", help="the directory to create (must not exist)")
    to_orbax.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a model config field, e.g. --set encoder_qkv_bias=true (repeatable)",
    )
    to_torch = directions.add_parser(
        "orbax-to-torch",
        help="a converted model directory or a training workdir to a reference .pt checkpoint",
        description="Convert a converted model directory (or a training workdir's newest checkpoint) back to a "
        "reference PyTorch checkpoint, {'model': state_dict}.",
    )
    to_torch.add_argument("input_dir", help="a converted model directory or a training workdir")
    to_torch.add_argument("output", help="the .pt file to write; its config goes beside it as NAME.config.json")
    to_torch.add_argument(
        "--config-json",
        action="store_true",
        help="also write config.json beside the .pt, where the reference's build_model(checkpoint=...) reads it",
    )
    to_torch.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (and a config.json of another model)"
    )
    to_torch.add_argument(
        "--step", type=int, help="of a training workdir, the checkpoint of this step (default: the newest intact one)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and convert; one `error:` line and exit code 1 on bad input."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error():
        if args.direction == "torch-to-orbax":
            out = torch_to_orbax(args.input, args.output_dir, args.model, parse_overrides(args.set))
        else:
            out = orbax_to_torch(
                args.input_dir, args.output, overwrite=args.overwrite, config_json=args.config_json, step=args.step,
                say=lambda line: print(line, file=sys.stderr),
            )  # fmt: skip
    print(f"wrote {out}", file=sys.stderr)
