"""ABX phone discrimination of features or units, computed by the optional ``fastabx`` package.

The protocol is the ZeroSpeech 2021 / Libri-Light phoneme ABX: for triplets (A, B, X) of phone tokens where A and X
share the phone and B differs, the error is how often X is closer to B than to A (dynamic time warping over the
frames of each token, frame distance as below), averaged over contexts (with ``context="within"``), then
speakers, then phone pairs.
Tokens and their context come from a ZeroSpeech ``.item`` file with the columns
``#file onset offset #phone prev-phone next-phone speaker`` (times in seconds).

- ``speaker="within"``: A, B and X come from the same speaker. ``"across"``: A and B from one speaker, X another.
- Continuous features, (frames, dim) float arrays, use the angular distance by default (``"euclidean"`` and
  ``"kl_symmetric"`` are also available).
- Discrete units, 1-D integer arrays of unit ids, use a 0/1 frame distance (``"identical"``). It is the angular
  distance between one-hot encodings of the units up to a factor 2, which changes no ABX comparison, without
  materialising the one-hot vectors.

Install the dependency with ``pip install 'spidr-jax[abx]'`` (fastabx requires Python >= 3.12).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

__all__ = ["abx_error", "item_fileids"]

_MISSING_FASTABX = "ABX needs fastabx (Python >= 3.12): pip install 'spidr-jax[abx]'"
_CONTINUOUS_DISTANCES = ("angular", "cosine", "euclidean", "kl_symmetric")
_UNIT_DISTANCES = ("angular", "cosine", "identical")
_MAX_LISTED = 5


def _import_fastabx():  # noqa: ANN202 (the module type comes from an optional package)
    """The fastabx module, or an ImportError that names the extra to install."""
    try:
        import fastabx  # noqa: PLC0415 (optional dependency)
    except ImportError as error:
        raise ImportError(_MISSING_FASTABX) from error
    return fastabx


def item_fileids(item_file: str | Path) -> set[str]:
    """File ids named in the first column of a ZeroSpeech ``.item`` file (its header line is skipped)."""
    path = Path(item_file)
    if not path.is_file():
        raise FileNotFoundError(f"Item file not found: {path}")
    with path.open(encoding="utf-8") as stream:
        header = stream.readline().split()
        if not header or header[0] != "#file":
            raise ValueError(f"{path}: the first line must be the header '#file onset offset #phone ...'")
        return {line.split(maxsplit=1)[0] for line in stream if line.strip()}


def _frequency(frame_step: float) -> Decimal:
    """Frames per second as a Decimal, so that onsets are converted to frame indices without float error."""
    if frame_step <= 0:
        raise ValueError(f"frame_step must be positive, got {frame_step}")
    return Decimal(1) / Decimal(str(frame_step))


def _prepare(fileid: str, array: np.ndarray) -> tuple[np.ndarray, bool]:
    """(frames, dim) float32 array to store for ``fileid``, and whether it holds discrete units."""
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1 and np.issubdtype(array.dtype, np.integer):
        array = array[:, 0]  # (frames, 1) unit ids, as some extractors save them
    if array.ndim == 1:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{fileid}: 1-D features must be integer unit ids, got dtype {array.dtype}")
        return array.astype(np.float32)[:, None], True
    if array.ndim != 2:
        raise ValueError(f"{fileid}: expected (frames, dim) features or 1-D unit ids, got shape {array.shape}")
    return array.astype(np.float32), False


def _feature_path(root: Path, fileid: str) -> Path:
    """Where to store the features of ``fileid`` below ``root``; fastabx matches paths without the extension."""
    parts = PurePosixPath(fileid).parts
    if not parts or PurePosixPath(fileid).is_absolute() or ".." in parts:
        raise ValueError(f"Invalid file id for ABX: {fileid!r}")
    return root.joinpath(*parts).with_name(parts[-1] + ".npy")


def abx_error(
    item_file: str | Path,
    features: Mapping[str, np.ndarray],
    *,
    speaker: Literal["within", "across"] = "within",
    context: Literal["within", "any"] = "within",
    frame_step: float = 0.02,
    distance: str = "angular",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    device: str | None = "cpu",
) -> float:
    """ABX error rate (0 is perfect, 0.5 is chance) of per-file features on the phone tokens of an item file.

    :param item_file: ZeroSpeech ``.item`` file describing the phone tokens.
    :param features: Mapping from file id (first column of the item file) to either continuous features
        (frames, dim) or unit ids (frames,), one frame every ``frame_step`` seconds. Every file of the item file
        must be present; extra entries are ignored.
    :param speaker: ``"within"`` or ``"across"`` speaker condition.
    :param context: ``"within"`` compares phones in the same (previous, next) phone context, ``"any"`` ignores it.
    :param frame_step: Seconds between frames (0.02 for the 50 Hz models).
    :param distance: Frame distance for continuous features; ignored for units, which always use the 0/1 distance
        (equivalent to the angular distance of one-hot vectors).
    :param max_size_group: At most this many A, B and X tokens per cell (10 in ZeroSpeech; None keeps all).
    :param max_x_across: In the across-speaker condition, at most this many X speakers per (A, B) (5 in ZeroSpeech).
    :param seed: Seed of the subsampling.
    :param device: Torch device on which fastabx computes distances (None: CUDA if available).
    :raises ImportError: If fastabx is not installed.
    """
    fastabx = _import_fastabx()
    import torch  # noqa: PLC0415 (installed with fastabx; only needed here)

    if speaker not in ("within", "across"):
        raise ValueError(f"speaker must be 'within' or 'across', got {speaker!r}")
    if context not in ("within", "any"):
        raise ValueError(f"context must be 'within' or 'any', got {context!r}")
    needed = item_fileids(item_file)
    missing = needed - set(features)
    if missing:
        shown = ", ".join(sorted(missing)[:_MAX_LISTED])
        raise KeyError(f"{len(missing)} files of {item_file} have no features: {shown}")

    with tempfile.TemporaryDirectory(prefix="spidr_abx_") as tmp:
        root = Path(tmp)
        kinds = set()
        for fileid in sorted(needed):
            array, is_units = _prepare(fileid, features[fileid])
            kinds.add(is_units)
            path = _feature_path(root, fileid)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)
        if len(kinds) > 1:
            raise ValueError("Mix of unit ids and continuous features: give one kind for every file")
        if kinds == {True}:
            if distance not in _UNIT_DISTANCES:
                raise ValueError(f"Units are compared with the 0/1 distance, not {distance!r}")
            distance = "identical"
        elif distance not in _CONTINUOUS_DISTANCES:
            raise ValueError(f"distance must be one of {_CONTINUOUS_DISTANCES}, got {distance!r}")

        def load(path: str | Path) -> torch.Tensor:
            return torch.from_numpy(np.load(path))

        return float(
            fastabx.zerospeech_abx(
                item_file,
                root,
                max_size_group=max_size_group,
                max_x_across=max_x_across,
                speaker=speaker,
                context=context,
                distance=distance,
                frequency=_frequency(frame_step),
                feature_maker=load,
                extension=".npy",
                seed=seed,
                device=device,
                progress=False,
            )
        )
