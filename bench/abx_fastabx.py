"""fastabx's ABX on a folder of .npy features, to set next to ``python -m spidr_jax.evaluate abx --features``.

Runs in an environment with fastabx (Python >= 3.12 and torch), where spidr_jax need not be installed:

    python -m bench.abx_fastabx --features DIR --item dev.item [--context any] [--no-subsampling]

Prints one JSON line per speaker condition: the error and fastabx's wall time (features loaded, scored).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def main() -> None:
    """Score within and across speaker with fastabx."""
    import fastabx
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.abx_fastabx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, required=True, help="folder of <fileid>.npy")
    parser.add_argument("--item", type=Path, required=True, help="ZeroSpeech .item file")
    parser.add_argument("--context", choices=["within", "any"], default="within")
    parser.add_argument("--speaker", choices=["within", "across", "both"], default="both")
    parser.add_argument("--no-subsampling", action="store_true", help="max_size_group and max_x_across None")
    parser.add_argument("--distance", default=None, help="fastabx distance (default: angular, identical for units)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def load(path: str | Path) -> torch.Tensor:
        array = np.load(path)
        return torch.from_numpy(array if array.ndim == 2 else array[:, None])

    first = np.load(next(args.features.rglob("*.npy")))
    units = np.issubdtype(first.dtype, np.integer)
    distance = args.distance or ("identical" if units else "angular")
    group, across = (None, None) if args.no_subsampling else (10, 5)
    for speaker in ["within", "across"] if args.speaker == "both" else [args.speaker]:
        start = time.perf_counter()
        error = fastabx.zerospeech_abx(
            args.item, args.features, max_size_group=group, max_x_across=across, speaker=speaker,
            context=args.context, distance=distance, frequency=50, feature_maker=load, extension=".npy",
            device="cpu", progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        print(json.dumps({"backend": "fastabx", "version": version("fastabx"), "speaker": speaker,
                          "context": args.context, "subsampling": not args.no_subsampling, "error": error,
                          "seconds": round(seconds, 2)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
