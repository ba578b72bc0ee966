"""Features as one file per audio file, written to a temporary name and renamed: complete or absent.

`.npy` float32 `(frames, dim)`, or `.pt` (a torch tensor, what fastabx reads by default). The `flat` layout names
each file by its fileid (`OUT/<fileid>.npy`, a '/' in it making folders); the `tree` layout keeps the audio's
folders below the folder all of it lies in, as ZeroSpeech tools expect. Created files get the permissions the
umask gives.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePath

import numpy as np

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.errors import MissingDependencyError
from spidr_jax.extract.settings import ExtractionError
from spidr_jax.storage.atomic import make_directory, write_atomically


def tree_names(rows: list[ManifestRow]) -> dict[str, str]:
    """Each fileid's name in the `tree` layout, as ZeroSpeech tools expect it.

    The audio's path below the folder all the audio lies in, without the extension (for an archive member, its
    path inside the archive).
    """
    files = [Path(row.path).absolute() for row in rows if not row.in_archive]
    root = Path(os.path.commonpath([path.parent for path in files])) if files else Path()
    return {
        row.fileid: str(
            PurePath(row.path if row.in_archive else Path(row.path).absolute().relative_to(root)).with_suffix("")
        )
        for row in rows
    }


class FeatureWriter:
    """One file per fileid (`.npy`, or `.pt` for fastabx), written to a temporary name and renamed.

    `names` gives each fileid's path below the output without its extension (the fileid itself by default: the
    `flat` layout; see `tree_names`).
    """

    def __init__(self, output: Path, *, names: dict[str, str] | None = None, feature_format: str = "npy") -> None:
        self.output = output
        self.root = output.resolve()
        self.names = names or {}
        self.suffix = f".{feature_format}"
        self.save = save_npy if feature_format == "npy" else save_pt

    def path(self, fileid: str) -> Path:
        """Where a file's features go (names with '/' become subfolders)."""
        target = (self.output / f"{self.names.get(fileid, fileid)}{self.suffix}").resolve()
        if self.root not in target.parents:
            raise ExtractionError(f"fileid {fileid!r} points outside the output directory")
        return target

    def is_done(self, fileid: str) -> bool:
        """Whether this file was written by an earlier run."""
        return self.path(fileid).exists()

    def write(self, fileid: str, values: np.ndarray) -> None:
        """Write one file's features atomically."""
        target = self.path(fileid)
        make_directory(target.parent)
        data = self.save(values.astype(np.float32))
        write_atomically(target, lambda file: file.write(data))

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to close."""


def save_npy(values: np.ndarray) -> bytes:
    """`.npy` bytes (saved to memory first: np.save's direct writes report a full disk without its reason)."""
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def save_pt(values: np.ndarray) -> bytes:
    """`torch.save` bytes of a float32 tensor, what fastabx reads by default."""
    try:
        import torch  # noqa: PLC0415 (optional: only --format pt needs it)
    except ImportError as error:
        raise MissingDependencyError("--format pt needs PyTorch: pip install 'spidr-jax[torch]'") from error
    buffer = io.BytesIO()
    torch.save(torch.from_numpy(values), buffer)
    return buffer.getvalue()
