"""Fit k-means units on the features of a whole corpus: the baseline next to the codebooks, and units of any layer.

    python -m spidr_jax.kmeans fit --checkpoint DIR --manifest train.csv --layer 6 --k 256 --output km.npz
    python -m spidr_jax.extract --checkpoint DIR --manifest dev.csv --output units --layer 6 --kmeans km.npz

Mini-batch k-means over features streamed from the model batch by batch (never all in memory), seeded k-means++ on
a sample; on all devices, and over every process of a launch (srun, or the JAX_* variables) as extraction shares a
manifest, the statistics summed across processes. The same seed and number of processes give the same centroids.
A killed fit continues from its last saved state (OUTPUT.state/). km.npz records K, the layer, the checkpoint and
the inertia of every epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spidr_jax.cli import HelpFormatter, command_parser
from spidr_jax.data.manifest import read_manifest
from spidr_jax.data.subset import sample_hours
from spidr_jax.errors import exit_on_user_error
from spidr_jax.evaluate.corpus_kmeans import fit_corpus_kmeans
from spidr_jax.extract.inference import Batching
from spidr_jax.extract.processes import join_processes, split_rows
from spidr_jax.extract.run import check_unique, load_checkpoint
from spidr_jax.models.layer_outputs import check_layer
from spidr_jax.pretrained import describe_checkpoint_at
from spidr_jax.runtime import enable_compilation_cache


def build_parser():  # noqa: ANN201 - argparse's parser
    """The command line: `fit`."""
    parser = command_parser("kmeans", __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="fit")
    fit = commands.add_parser(
        "fit",
        formatter_class=HelpFormatter,
        help="fit k-means on a layer's features of a corpus, into km.npz",
        description="Fit k-means on a layer's features of every file of a manifest (or a random sample of "
        "--max-hours of it), and write the centroids to --output.",
    )
    fit.add_argument("--checkpoint", required=True, type=Path, help="a converted model directory or a training workdir")
    fit.add_argument("--step", type=int, help="of a training workdir, this step's checkpoint (default: the newest)")
    fit.add_argument("--manifest", required=True, type=Path, help="CSV (fileid,path,num_samples), fairseq TSV or JSONL")
    fit.add_argument(
        "--layer", required=True, type=int, help="the transformer layer, 1-based (its feed-forward output)"
    )
    fit.add_argument("--k", required=True, type=int, help="the number of clusters (units)")
    fit.add_argument("--output", required=True, type=Path, help="the km.npz to write")
    fit.add_argument("--max-hours", type=float, help="fit on a random sample of this many hours of the manifest")
    fit.add_argument("--epochs", type=int, default=3, help="passes over the corpus (the first mini-batch, then Lloyd)")
    fit.add_argument("--seed", type=int, default=0, help="seeds the sample, k-means++ and --max-hours")
    fit.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the model's compute dtype")
    fit.add_argument("--batch-seconds", type=float, default=200.0, help="audio per batch (all devices)")
    fit.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Fit and write km.npz; one line and exit code 1 on bad input."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error():
        processes = join_processes()
        enable_compilation_cache()
        rows = read_manifest(args.manifest)
        check_unique(rows, args.manifest)
        if args.max_hours is not None:
            rows = sample_hours(rows, args.max_hours, seed=args.seed)
        model, _, step = load_checkpoint(args.checkpoint.resolve(), args.dtype, args.step)
        if processes.is_first:
            print(f"checkpoint: {describe_checkpoint_at(args.checkpoint, step)}", file=sys.stderr)
        check_layer(model.config, args.layer, units=False)
        if args.output.exists() and args.output.is_dir():
            raise FileExistsError(f"{args.output} is a directory; --output names the km.npz to write")
        share = [rows[i] for i in split_rows(rows, processes.count)[processes.index]]
        fitted, failed = fit_corpus_kmeans(
            model,
            share,
            layer=args.layer,
            k=args.k,
            output=args.output,
            checkpoint=f"{args.checkpoint.resolve()} (step {step})",
            seed=args.seed,
            epochs=args.epochs,
            batching=Batching(batch_seconds=args.batch_seconds),
            progress=not args.quiet and processes.count == 1,
        )
    for location, reason in list(failed.items())[:20]:
        print(f"{processes.prefix()}  failed: {location}: {reason}", file=sys.stderr)
    if processes.is_first:
        inertia = ", ".join(f"{value:.4g}" for value in fitted.inertia)
        print(
            f"wrote {args.output}: k={fitted.k}, layer {args.layer}, {fitted.frames} frames per epoch from "
            f"{len(rows)} files ({len(failed)} failed), inertia per epoch {inertia}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
