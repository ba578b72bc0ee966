"""Convert a converted model directory (or a training workdir) to a `.pt`: `python -m spidr_jax.convert orbax-to-torch`.

python convert/orbax_to_torch.py converted/spidr_base spidr_base_roundtrip.pt
"""

from __future__ import annotations

import sys

from spidr_jax.convert import cli


def main(argv: list[str] | None = None) -> None:
    """`python -m spidr_jax.convert orbax-to-torch ARGS`."""
    cli.main(["orbax-to-torch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
