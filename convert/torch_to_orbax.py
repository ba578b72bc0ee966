"""Convert a reference PyTorch checkpoint to a converted model directory: `python -m spidr_jax.convert torch-to-orbax`.

python convert/torch_to_orbax.py --model spidr spidr_base.pt converted/spidr_base
"""

from __future__ import annotations

import sys

from spidr_jax.convert import cli


def main(argv: list[str] | None = None) -> None:
    """`python -m spidr_jax.convert torch-to-orbax ARGS`."""
    cli.main(["torch-to-orbax", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
