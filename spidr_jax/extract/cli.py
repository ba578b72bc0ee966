"""Extract features or discrete units of one layer for every file of a manifest.

    python -m spidr_jax.extract --checkpoint converted/spidr_base --manifest dev.csv --output feats --layer 6
    python -m spidr_jax.extract --checkpoint converted/spidr_base --manifest dev.csv --output units --layer 6 --units

Features go to OUT/<fileid>.npy (float32, (frames, dim)); units to OUT/units.jsonl, one line per file:
{"fileid": ..., "units": [...]}. Files already written are skipped, so an interrupted run resumes; OUT/extraction.json
records the settings, and a rerun with others is refused unless --overwrite. Under srun, or with the
JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID variables, the processes share the manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spidr_jax.cli import command_parser
from spidr_jax.errors import exit_on_user_error
from spidr_jax.extract.inference import Batching
from spidr_jax.extract.processes import join_processes
from spidr_jax.extract.run import ExtractionOptions, log, run_extraction
from spidr_jax.extract.unit_formats import UNIT_FORMATS
from spidr_jax.runtime import enable_compilation_cache


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = command_parser("extract", __doc__)
    parser.add_argument("--checkpoint", required=True, help="a converted model directory or a training workdir")
    parser.add_argument(
        "--step", type=int, help="of a training workdir, the checkpoint of this step (default: the newest intact one)"
    )
    parser.add_argument("--manifest", required=True, help="CSV (fileid,path,num_samples), fairseq TSV or JSONL")
    parser.add_argument("--output", required=True, help="the output directory")
    parser.add_argument("--layer", required=True, type=int, help="the transformer layer, 1-based")
    parser.add_argument("--units", action="store_true", help="write codebook units (argmax) instead of features")
    parser.add_argument(
        "--kmeans",
        type=Path,
        metavar="KM.npz",
        help="write units of the layer's features by this k-means (python -m spidr_jax.kmeans fit); implies --units",
    )
    parser.add_argument(
        "--units-format",
        choices=UNIT_FORMATS,
        default="jsonl",
        help="units: also write the layout of fairseq (km), GSLM/textlesslib (gslm) or SlamKit (slamkit)",
    )
    parser.add_argument(
        "--dedup", action="store_true", help="units: collapse repeated units and record their durations in frames"
    )
    parser.add_argument(
        "--layout", choices=["flat", "tree"], default="flat",
        help="features: OUT/<fileid>.npy, or the audio's folders below their common root (ZeroSpeech tools)",
    )  # fmt: skip
    parser.add_argument(
        "--format", dest="feature_format", choices=["npy", "pt"], default="npy",
        help="features: .npy float32 (frames, dim), or .pt (torch tensors, what fastabx reads; needs torch)",
    )  # fmt: skip
    parser.add_argument(
        "--after-residual", action="store_true", help="layer outputs instead of feed-forward outputs (features only)"
    )
    parser.add_argument(
        "--on-error", choices=["continue", "stop"], default="continue", help="what a file that fails does"
    )
    parser.add_argument("--no-normalize", action="store_true", help="skip the per-utterance standardization")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the compute dtype")
    parser.add_argument(
        "--attention", choices=["auto", "xla", "cudnn"], default="auto",
        help="the attention kernel: cudnn needs an NVIDIA GPU and --dtype bfloat16",
    )  # fmt: skip
    parser.add_argument("--batch-seconds", type=float, default=200.0, help="audio per batch (all devices)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="utterances per batch at most")
    parser.add_argument("--max-shapes", type=int, default=8, help="padded lengths (compilations) at most")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an earlier extraction in --output and start afresh"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (options of units and of features are not mixed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.units = args.units or args.kmeans is not None
    units_only = [flag for flag, given in (("--units-format", args.units_format != "jsonl"), ("--dedup", args.dedup))
                  if given]  # fmt: skip
    features_only = [
        flag
        for flag, given in (
            ("--layout", args.layout != "flat"),
            ("--format", args.feature_format != "npy"),
            ("--after-residual", args.after_residual),
        )
        if given
    ]
    if units_only and not args.units:
        parser.error(f"{', '.join(units_only)} apply to units: add --units")
    if features_only and args.units:
        parser.error(f"{', '.join(features_only)} apply to features, not to --units")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the extraction.

    Exit code 1 on bad input, when no file could be extracted, or on a failure with --on-error stop; 130 on Ctrl-C.
    """
    args = parse_args(argv)
    with exit_on_user_error():  # a malformed launcher variable
        processes = join_processes()  # before anything touches a device
    enable_compilation_cache()  # a second extraction with the same shapes compiles nothing
    options = ExtractionOptions(
        layer=args.layer,
        units=args.units,
        before_residual=not args.after_residual,
        stop_on_error=args.on_error == "stop",
        dtype=args.dtype,
        attention=args.attention,
        batching=Batching(
            normalize=not args.no_normalize,
            batch_seconds=args.batch_seconds,
            max_batch_size=args.max_batch_size,
            max_shapes=args.max_shapes,
            resample=True,
        ),
        progress=not args.quiet and processes.count == 1,  # several progress displays would interleave
        overwrite=args.overwrite,
        step=args.step,
        units_format=args.units_format,
        dedup=args.dedup,
        layout=args.layout,
        feature_format=args.feature_format,
        kmeans=args.kmeans,
    )
    try:
        with exit_on_user_error():
            summary = run_extraction(Path(args.checkpoint), Path(args.manifest), Path(args.output), options, processes)
    except KeyboardInterrupt:
        log(processes, f"interrupted: what was written in {args.output} is complete and kept; the same command resumes")
        sys.exit(130)
    log(processes, summary.describe())
    for path in summary.rendered:
        log(processes, f"wrote {path}")
    if summary.merged:
        log(processes, f"{summary.merged} units records of the processes' shards merged into {args.output}/units.jsonl")
    if summary.total_failed and not summary.total_written:
        log(processes, f"no file could be extracted: {summary.total_failed} failed")
        sys.exit(1)
    if summary.failed and options.stop_on_error:
        sys.exit(1)


if __name__ == "__main__":
    main()
