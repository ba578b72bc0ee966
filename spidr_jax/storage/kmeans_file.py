"""``km.npz``: k-means centroids fitted on a model layer's features, with what they were fitted on.

Arrays (NumPy ``.npz``, no pickled objects): ``centroids`` (K, dim) float32, ``inertia`` (epochs,) float64 (the
inertia of each epoch, see `spidr_jax.evaluate.streaming_kmeans`), ``k``, ``dim``, ``layer`` (int; -1 for
features that do not come from a model layer, such as MFCCs), ``checkpoint`` (text: the model's directory, or what
the features are), ``frames`` (int: frames of one epoch).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from spidr_jax.errors import UserError
from spidr_jax.storage.atomic import write_atomically

__all__ = ["KMeansFile", "KMeansFileError", "read_kmeans_file", "write_kmeans_file"]

NO_LAYER = -1


class KMeansFileError(UserError):
    """A ``km.npz`` that cannot be used here; the message names the file."""


@dataclasses.dataclass(frozen=True)
class KMeansFile:
    """The contents of a ``km.npz``."""

    centroids: np.ndarray
    layer: int
    checkpoint: str
    inertia: tuple[float, ...] = ()
    frames: int = 0

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Dimension of the features."""
        return int(self.centroids.shape[1])


def write_kmeans_file(path: str | Path, model: KMeansFile) -> None:
    """Write ``model`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    path = Path(path)
    centroids = np.asarray(model.centroids, dtype=np.float32)
    if centroids.ndim != 2 or not np.isfinite(centroids).all():
        raise ValueError(f"centroids must be a finite (K, dim) array, got shape {centroids.shape}")
    arrays = {
        "centroids": centroids,
        "inertia": np.asarray(model.inertia, dtype=np.float64),
        "k": np.int64(centroids.shape[0]),
        "dim": np.int64(centroids.shape[1]),
        "layer": np.int64(model.layer),
        "checkpoint": np.str_(model.checkpoint),
        "frames": np.int64(model.frames),
    }
    write_atomically(path, lambda file: np.savez(file, **arrays))


def read_kmeans_file(path: str | Path, *, dim: int | None = None, layer: int | None = None) -> KMeansFile:
    """Read and check a ``km.npz``; ``dim`` and ``layer``, when given, must match the file's.

    :raises KMeansFileError: one line naming the file: missing, not an ``.npz``, without centroids, malformed,
        of another dimension or layer.
    """
    path = Path(path)
    if not path.is_file():
        raise KMeansFileError(f"{path}: no such k-means file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise KMeansFileError(f"{path}: not a k-means .npz file ({error})") from error
    if "centroids" not in contents:
        raise KMeansFileError(f"{path}: no centroids in this file (arrays: {', '.join(sorted(contents)) or 'none'})")
    centroids = contents["centroids"]
    if centroids.ndim != 2 or centroids.shape[0] < 1 or not np.issubdtype(centroids.dtype, np.floating):
        got = f"{centroids.dtype} {centroids.shape}"
        raise KMeansFileError(f"{path}: centroids must be a (K, dim) float array, got {got}")
    if not np.isfinite(centroids).all():
        raise KMeansFileError(f"{path}: centroids contain NaN or infinite values")
    for name, expected in (("k", centroids.shape[0]), ("dim", centroids.shape[1])):
        if name in contents and int(contents[name]) != expected:
            raise KMeansFileError(f"{path}: {name} says {int(contents[name])}, the centroids have {expected}")
    model = KMeansFile(
        centroids=centroids.astype(np.float32),
        layer=int(contents.get("layer", NO_LAYER)),
        checkpoint=str(contents.get("checkpoint", "")),
        inertia=tuple(float(v) for v in np.atleast_1d(contents.get("inertia", np.zeros(0)))),
        frames=int(contents.get("frames", 0)),
    )
    if dim is not None and model.dim != dim:
        raise KMeansFileError(f"{path}: centroids of dimension {model.dim}, the features have dimension {dim}")
    if layer is not None and model.layer != layer:
        raise KMeansFileError(f"{path}: fitted on layer {model.layer}, not on layer {layer}")
    return model
