"""The ``abx`` subcommand of ``python -m spidr_jax.evaluate``: its options, and scoring a model or a folder.

    python -m spidr_jax.evaluate abx --checkpoint DIR --manifest dev.csv --item dev.item --layer 6 [--units]
    python -m spidr_jax.evaluate abx --features FEATURES_DIR --item dev.item --speaker both

Features come from a model (``--checkpoint``, ``--manifest``, ``--layer``: a layer's features, its codebook units
with ``--units`` or its codebook probabilities with ``--probabilities``), or from a folder of ``.npy`` files, one
per file id of the item file (``FEATURES_DIR/<fileid>.npy``, as ``python -m spidr_jax.extract`` writes them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from spidr_jax.errors import MissingDependencyError, UsageError, exit_on_user_error
from spidr_jax.evaluate.abx_items import check_features, read_item_file
from spidr_jax.evaluate.abx_jax import FeaturesError, abx_error_jax
from spidr_jax.runtime import enable_compilation_cache

__all__ = ["FeatureFolder", "add_arguments", "run"]

_FASTABX_EXTRA = "--backend fastabx needs fastabx (Python >= 3.12): pip install 'spidr-jax[abx]'"


class FeatureFolder(Mapping[str, np.ndarray]):
    """The ``.npy`` files below a folder, by file id (their path relative to the folder, without ``.npy``).

    Arrays are memory-mapped when read: their shape costs nothing, their values are read when used.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UsageError(f"--features {root}: not a directory")
        self.root = root
        self.paths = {path.relative_to(root).with_suffix("").as_posix(): path for path in root.rglob("*.npy")}
        if not self.paths:
            raise UsageError(f"--features {root}: no .npy file in it")

    def __getitem__(self, fileid: str) -> np.ndarray:
        try:
            return np.load(self.paths[fileid], mmap_mode="r")
        except ValueError as error:  # not an array file
            raise UsageError(f"{self.paths[fileid]}: not a readable .npy array ({error})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``abx`` subcommand."""
    source = parser.add_argument_group("features (a model, or a folder of .npy files)")
    source.add_argument("--checkpoint", type=Path, help="converted model directory or training workdir")
    source.add_argument(
        "--step", type=int, help="of a training workdir, the checkpoint of this step (default: the newest intact one)"
    )
    source.add_argument("--manifest", type=Path, help="manifest of the audio files (with --checkpoint)")
    source.add_argument("--layer", help="layer whose features (or codebook units) are scored (with --checkpoint)")
    kind = source.add_mutually_exclusive_group()
    kind.add_argument("--units", action="store_true", help="discrete codebook units instead of continuous features")
    kind.add_argument(
        "--probabilities",
        action="store_true",
        help="codebook probabilities instead of features (kl_symmetric distance by default)",
    )
    source.add_argument(
        "--features",
        type=Path,
        metavar="DIR",
        help="score DIR/<fileid>.npy instead of a model: (frames, dim) floats or (frames,) unit ids",
    )
    parser.add_argument("--item", required=True, type=Path, help="ZeroSpeech .item file of the phone tokens")
    parser.add_argument("--speaker", choices=["within", "across", "both"], default="within",
                        help="A, B, X from one speaker, or X from another (default: within)")  # fmt: skip
    parser.add_argument("--context", choices=["within", "any"], default="within",
                        help="compare phones in the same (previous, next) phones, or in any context "
                             "(default: within)")  # fmt: skip
    parser.add_argument("--distance", choices=["angular", "euclidean", "kl_symmetric"], default=None,
                        help="frame distance for features (default: angular; kl_symmetric with --probabilities); "
                             "units always use the 0/1 distance")  # fmt: skip
    parser.add_argument("--max-size-group", type=int, default=10, metavar="N",
                        help="at most N tokens per phone, context and speaker, drawn at random (ZeroSpeech: 10; "
                             "0: all)")  # fmt: skip
    parser.add_argument(
        "--max-x-across",
        type=int,
        default=5,
        metavar="N",
        help="across speaker, at most N X speakers per A and B (ZeroSpeech: 5; 0: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsampling (default: 0)")
    parser.add_argument("--frame-step", default="0.02", metavar="SECONDS",
                        help="seconds between frames (default: 0.02, the models' 50 Hz)")  # fmt: skip
    parser.add_argument("--librilight-slicing", action="store_true",
                        help="slice one frame less at the end of each token, as Libri-Light / ZeroSpeech 2021 "
                             "did")  # fmt: skip
    parser.add_argument("--backend", choices=["jax", "fastabx"], default="jax",
                        help="jax (default, any device) or fastabx (needs Python >= 3.12 and torch)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON line per score")


def _limit(value: int, flag: str) -> int | None:
    if value < 0:
        raise UsageError(f"{flag} must be 0 (no limit) or positive, got {value}")
    return value or None


def _model_features(
    args: argparse.Namespace, fileids: set[str], say: Callable[[str], None]
) -> tuple[dict[str, np.ndarray], str, str]:
    """(features by fileid, what they are, where they come from) of the manifest's files named in the item file."""
    # The model stack loads only when a model is scored.
    from spidr_jax.data.manifest import read_manifest  # noqa: PLC0415
    from spidr_jax.data.scan import at_model_rate  # noqa: PLC0415
    from spidr_jax.evaluate.model_units import collect_outputs  # noqa: PLC0415
    from spidr_jax.evaluate.units_command import BATCHING  # noqa: PLC0415
    from spidr_jax.models.layer_outputs import check_layer, features_at, probabilities_at, units_at  # noqa: PLC0415
    from spidr_jax.pretrained import describe_checkpoint, load_pretrained  # noqa: PLC0415

    if args.manifest is None or args.layer is None:
        raise UsageError("--checkpoint needs --manifest and --layer")
    try:
        layer = int(args.layer)
    except ValueError:
        raise UsageError(f"--layer expects one layer number, got {args.layer!r}") from None
    model = load_pretrained(args.checkpoint, step=args.step, teacher=False)
    say(f"checkpoint: {describe_checkpoint(args.checkpoint, model)}")
    check_layer(model.config, layer, units=args.units or args.probabilities)
    rows, _ = at_model_rate([row for row in read_manifest(args.manifest) if row.fileid in fileids])
    if args.units:
        output, kind = units_at(layer, model.config), "units"
    elif args.probabilities:
        output, kind = probabilities_at(layer, model.config), "codebook probabilities"
    else:
        output, kind = features_at(layer), "features"
    features, failed = collect_outputs(model, rows, output, BATCHING)
    if failed:
        listed = "; ".join(f"{location}: {reason}" for location, reason in list(failed.items())[:3])
        raise FeaturesError(f"{len(failed)} files of {args.manifest} could not be read: {listed}")
    return features, f"layer {layer} {kind}", str(args.manifest)


def _fastabx(args: argparse.Namespace, features: Mapping[str, np.ndarray], speaker: str, distance: str) -> float:
    try:
        from spidr_jax.evaluate.abx import abx_error  # noqa: PLC0415 (fastabx is optional)

        return abx_error(
            args.item, features, speaker=speaker, context=args.context, frame_step=float(args.frame_step),
            distance=distance, max_size_group=_limit(args.max_size_group, "--max-size-group"),
            max_x_across=_limit(args.max_x_across, "--max-x-across"), seed=args.seed, device=None,
        )  # fmt: skip
    except ImportError as error:
        if "fastabx" in str(error):
            raise MissingDependencyError(_FASTABX_EXTRA) from None
        raise


def run(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Print the ABX error rate of each requested speaker condition (`say` hears the checkpoint used)."""
    with exit_on_user_error():
        if (args.features is None) == (args.checkpoint is None):
            raise UsageError("give either --checkpoint (with --manifest and --layer) or --features DIR")
        if args.backend == "fastabx" and args.librilight_slicing:
            raise UsageError("--librilight-slicing is for --backend jax (fastabx: FASTABX_WITH_LIBRILIGHT_BUG=1)")
        max_size_group = _limit(args.max_size_group, "--max-size-group")
        max_x_across = _limit(args.max_x_across, "--max-x-across")
        if args.backend == "fastabx":
            _fastabx_or_explain()
        else:
            enable_compilation_cache()  # a second evaluation with the same shapes compiles nothing
        # Read the item file once, first: a bad one is reported before any model runs.
        tokens = read_item_file(args.item, frame_step=args.frame_step, context=args.context == "within",
                                librilight_slicing=args.librilight_slicing)  # fmt: skip
        fileids = set(tokens.fileids)
        if args.features is not None:
            if args.units or args.probabilities or args.layer is not None or args.manifest is not None:
                raise UsageError("--features DIR takes no --layer, --manifest, --units or --probabilities")
            features, source = FeatureFolder(args.features), str(args.features)
            first = features[next(iter(features))]
            what = "units" if np.issubdtype(first.dtype, np.integer) else "features"
        else:
            features, what, source = _model_features(args, fileids, say)
        check_features(tokens, {f: np.shape(features[f])[0] for f in tokens.fileids if f in features}, source)
        distance = args.distance or ("kl_symmetric" if args.probabilities else "angular")
        speakers = ["within", "across"] if args.speaker == "both" else [args.speaker]
        for speaker in speakers:
            if args.backend == "fastabx":
                error = _fastabx(args, features, speaker, distance)
            else:
                error = abx_error_jax(
                    tokens, features, speaker=speaker, context=args.context, frame_step=args.frame_step,
                    distance=distance, max_size_group=max_size_group, max_x_across=max_x_across, seed=args.seed,
                    librilight_slicing=args.librilight_slicing, source=source, progress=True,
                )  # fmt: skip
            if args.json:
                print(json.dumps({"speaker": speaker, "context": args.context, "scored": what,
                                  "backend": args.backend, "error": error}))  # fmt: skip
            else:
                print(f"ABX {speaker} speaker, {args.context} context, {what}: {100 * error:.2f}% error", flush=True)


def _fastabx_or_explain() -> None:
    """Fail in one line, before any work, when fastabx is not installed."""
    try:
        import fastabx  # noqa: F401, PLC0415 (optional)
    except ImportError:
        raise MissingDependencyError(_FASTABX_EXTRA) from None
