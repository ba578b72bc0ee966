"""ABX phone discrimination of features or units in JAX, on any JAX device, without torch.

This is the ZeroSpeech 2021 / Libri-Light phoneme ABX.
For triplets (A, B, X) of phone tokens where A and X share the phone and B differs, the error is how often X is
closer to B than to A (ties count 1/2), with the distance between two tokens the DTW over their frames of a frame
distance, averaged over contexts, then speakers, then phone pairs (``abx_cells``). Tokens come from a ZeroSpeech
``.item`` file (``abx_items``).

- ``speaker="within"``: A, B and X come from one speaker; ``"across"``: A and B from one, X from another.
- ``context="within"``: A, B and X share the previous and next phones; ``"any"`` ignores them.
- Continuous features, (frames, dim) float arrays, use the angular distance by default (``"euclidean"`` and
  ``"kl_symmetric"``, for probability vectors such as codebook probabilities, are the others).
- Discrete units, (frames,) integer arrays, use the 0/1 distance (the angular distance of one-hot vectors up to a
  factor 2, which changes no comparison).

Without subsampling (``max_size_group=None``, ``max_x_across=None``) this is exactly fastabx's
``zerospeech_abx`` on the same item file and features; with ZeroSpeech's subsampling (10 and 5, the defaults) the
random subsets differ from fastabx's, and so does the score, by the sampling noise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from spidr_jax.errors import UsageError, UserError
from spidr_jax.evaluate.abx_cells import build_cells, collapse
from spidr_jax.evaluate.abx_items import ItemFileError, ItemTokens, check_features, read_item_file
from spidr_jax.evaluate.abx_scoring import cell_errors, rectangles
from spidr_jax.evaluate.frame_distances import DISTANCES, prepare_frames_into
from spidr_jax.evaluate.token_distances import Budget, TokenPairs, pair_distances
from spidr_jax.progress import make_progress

__all__ = ["FeaturesError", "abx_error_jax", "load_frames"]


class FeaturesError(UserError):
    """Features that cannot be scored: mixed kinds, wrong shapes, non-finite values."""


def _kind(fileid: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[bool, int]:
    """(whether the file holds unit ids, values per frame) of one file's array."""
    integer = np.issubdtype(dtype, np.integer)
    if len(shape) == 2 and shape[1] == 1 and integer:
        return True, 1  # (frames, 1) unit ids, as some extractors save them
    if len(shape) == 1:
        if not integer:
            raise FeaturesError(f"{fileid}: 1-D features must be integer unit ids, got dtype {dtype}")
        return True, 1
    if len(shape) != 2 or integer:
        raise FeaturesError(
            f"{fileid}: expected (frames, dim) float features or (frames,) unit ids, got {dtype} {shape}"
        )
    return False, shape[1]


def load_frames(
    tokens: ItemTokens, features: Mapping[str, np.ndarray], distance: str, source: str
) -> tuple[np.ndarray | jax.Array, np.ndarray, str]:
    """All files of the item file, concatenated and prepared for ``distance``.

    Returns (frames (F, D) or units (F,), the first frame of each of ``tokens.fileids``, the frame distance: the
    requested one for features, ``"identical"`` for units). Files are read one at a time into one host array;
    on an accelerator it then moves to the device (on a CPU, the tiles gather from host memory directly).
    """
    present = {fileid: features[fileid] for fileid in tokens.fileids if fileid in features}
    check_features(tokens, {fileid: np.shape(array)[0] for fileid, array in present.items()}, source)
    kinds = {fileid: _kind(fileid, np.shape(array), np.asarray(array[:0]).dtype) for fileid, array in present.items()}
    if len({kind for kind, _ in kinds.values()}) > 1:
        units = [fileid for fileid, (kind, _) in kinds.items() if kind][:3]
        raise FeaturesError(f"{source} mixes unit ids (e.g. {', '.join(units)}) and continuous features")
    units, depth = next(iter(kinds.values()))
    dimensions = sorted({dim for _, dim in kinds.values()})
    if not units and len(dimensions) > 1:
        raise FeaturesError(f"{source}: feature dimensions differ between files ({dimensions})")
    if units:
        if distance not in ("angular", "identical"):
            raise UsageError(f"units are compared with the 0/1 distance ('identical'), not {distance!r}")
        distance = "identical"
    elif distance not in DISTANCES or distance == "identical":
        raise UsageError(f"distance for features must be one of angular, euclidean, kl_symmetric; got {distance!r}")
    counts = np.asarray([np.shape(present[fileid])[0] for fileid in tokens.fileids], np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    frames = np.empty((total,) if units else (total, depth), np.int32 if units else np.float32)
    for fileid, first, count in zip(tokens.fileids, firsts.tolist(), counts.tolist(), strict=True):
        array = np.asarray(present[fileid])
        destination = frames[first : first + count]
        prepare_frames_into(destination, array.reshape(-1) if units else array, distance)
        if not units and not np.isfinite(destination).all():
            raise FeaturesError(f"{fileid}: its features hold non-finite values (NaN or infinity)")
    if jax.default_backend() != "cpu":
        frames = jax.device_put(frames)
    return frames, firsts, distance


def _layout(tokens: ItemTokens, speaker: str, context: str) -> tuple[np.ndarray, np.ndarray]:
    """(block, rank) of each token: pairs never leave a block; tokens of one speaker and phone sit together."""
    if speaker == "within":
        columns = [tokens.context, tokens.speaker] if context == "within" else [tokens.speaker]
    else:
        columns = [tokens.context] if context == "within" else [np.zeros(len(tokens), np.int64)]
    block = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)[1].ravel()
    order = np.lexsort((np.arange(len(tokens)), tokens.phone, tokens.speaker, block))
    rank = np.empty(len(tokens), np.int64)
    rank[order] = np.arange(len(tokens))
    return block, rank


def abx_error_jax(
    item_file: str | Path | ItemTokens,
    features: Mapping[str, np.ndarray],
    *,
    speaker: Literal["within", "across"] = "within",
    context: Literal["within", "any"] = "within",
    frame_step: float | str = "0.02",
    distance: str = "angular",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    librilight_slicing: bool = False,
    source: str = "the features",
    progress: bool = False,
    budget: Budget | None = None,
) -> float:
    """ABX error rate (0 is perfect, 0.5 is chance) of per-file features or units on the tokens of an item file.

    :param item_file: ZeroSpeech ``.item`` file describing the phone tokens, or its tokens as ``read_item_file``
        read them (with this ``frame_step``, ``context`` and ``librilight_slicing``), to score several conditions
        on one read.
    :param features: Mapping from file id (first column of the item file) to continuous features (frames, dim) or
        unit ids (frames,), one frame every ``frame_step`` seconds. Every file of the item file must be present.
    :param speaker: ``"within"`` or ``"across"`` speaker.
    :param context: ``"within"`` compares phones in the same (previous, next) context, ``"any"`` ignores it.
    :param frame_step: Seconds between frames (0.02 at 50 Hz); a string keeps the frame boundaries exact.
    :param distance: Frame distance for features: ``"angular"``, ``"euclidean"`` or ``"kl_symmetric"``; units
        always use the 0/1 distance.
    :param max_size_group: At most this many tokens per set (10 in ZeroSpeech; None keeps all).
    :param max_x_across: Across speaker, at most this many X speakers per (A, B) (5 in ZeroSpeech; None: all).
    :param seed: Seed of the subsampling.
    :param librilight_slicing: Slice one frame less at the end of every token, as Libri-Light and ZeroSpeech 2021
        did (fastabx's ``FASTABX_WITH_LIBRILIGHT_BUG=1``).
    :param source: What the features come from, for error messages.
    :param progress: Show a progress bar over the token pairs.
    :raises UserError: On a bad item file, missing or malformed features, or no cell to score.
    """
    tokens = (
        item_file
        if isinstance(item_file, ItemTokens)
        else read_item_file(
            item_file, frame_step=frame_step, context=context == "within", librilight_slicing=librilight_slicing
        )
    )
    cells = build_cells(
        tokens, speaker=speaker, context=context, max_size_group=max_size_group, max_x_across=max_x_across, seed=seed
    )
    if len(cells.cell_a) == 0:
        raise ItemFileError(
            f"{tokens.path}: no ABX cell {speaker} speaker and {context} context: it needs two phones that share "
            "a speaker"
            + (" and a context" if context == "within" else "")
            + (", the first one twice" if speaker == "within" else ", and the first one from another speaker too")
        )
    frames, file_first, distance = load_frames(tokens, features, distance, source)
    found = rectangles(cells)
    distinct = found.x != found.y  # a token against itself is never compared
    block, rank = _layout(tokens, speaker, context)
    pairs = TokenPairs(
        first=file_first[tokens.file] + tokens.start, length=tokens.lengths, block=block, rank=rank,
        x=found.x[distinct], y=found.y[distinct],
    )  # fmt: skip
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("ABX distances", total=len(pairs.x), status=f"{len(cells.cell_a)} cells")
        advance: Callable[[int], None] = functools.partial(bar.advance, task)
        distances = np.zeros(len(found.x), np.float32)
        distances[distinct] = pair_distances(frames, pairs, distance, budget=budget, advance=advance)
    return collapse(cells, cell_errors(cells, found, distances))
