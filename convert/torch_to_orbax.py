"""Convert a reference PyTorch checkpoint (SpidR, DinoSR, or the original fairseq DinoSR) to an Orbax directory.

python convert/torch_to_orbax.py --model spidr spidr_base.pt converted/spidr_base
"""

from __future__ import annotations

import argparse
import sys

from spidr_jax.cli_errors import exit_on_error
from spidr_jax.interop.convert import ConversionWriteError, parse_overrides, torch_to_orbax


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and convert."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=["spidr", "dinosr", "dinosr_fairseq"], help="checkpoint kind")
    parser.add_argument("input", help="the .pt file ({'model': state_dict}, a bare state_dict, or fairseq DinoSR)")
    parser.add_argument("output_dir", help="directory to create (must not exist)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a model config field, e.g. --set encoder_qkv_bias=true (repeatable)",
    )
    args = parser.parse_args(argv)
    with exit_on_error((ConversionWriteError,)):
        out = torch_to_orbax(args.input, args.output_dir, args.model, parse_overrides(args.set))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
