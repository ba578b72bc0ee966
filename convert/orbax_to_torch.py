"""Convert an Orbax directory (converted model or training workdir) back to a reference PyTorch checkpoint.

python convert/orbax_to_torch.py converted/spidr_base spidr_base_roundtrip.pt
"""

from __future__ import annotations

import argparse
import sys

from spidr_jax.cli_errors import exit_on_error
from spidr_jax.interop.convert import ConversionWriteError, orbax_to_torch


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and convert."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir", help="converted model directory")
    parser.add_argument("output", help="the .pt file to write ({'model': state_dict})")
    args = parser.parse_args(argv)
    with exit_on_error((ConversionWriteError,)):
        out = orbax_to_torch(args.input_dir, args.output)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
