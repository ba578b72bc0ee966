"""Saving and restoring a streaming k-means fit, so that a killed fit continues exactly where it was saved.

Each process keeps its own state file in the state folder (``process-I-of-N.npz``) and the one before it
(``...prev.npz``): they differ only while the initial sample is drawn, each process holding its own. Every
process saves at the same steps (the fit runs in lockstep), each file atomically (a temporary file, then renamed).
A kill can still fall between two processes' renames: on resume every process reports the step of its newest
file, and all restart from the oldest of those, which every process holds as its newest or previous file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spidr_jax.errors import UserError

Reduce = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

INIT = "init"  # drawing the initial sample
FIT = "fit"  # epochs over the corpus
DONE = "done"


class KMeansStateError(UserError):
    """A saved k-means state that cannot be continued; the message names the folder."""


@dataclasses.dataclass
class FitState:
    """Everything a fit needs to continue; ``tick`` counts the lockstep steps taken since the start."""

    settings: dict[str, object]
    phase: str = INIT
    tick: int = 0
    epoch: int = 0
    step: int = 0  # batches of the current pass already taken
    centroids: np.ndarray | None = None  # (k, dim) float32
    seen: np.ndarray | None = None  # (k,) float64: points each centroid has absorbed (mini-batch epochs)
    epoch_sums: np.ndarray | None = None  # (k, dim) float64: this epoch's sums per cluster (Lloyd epochs)
    epoch_counts: np.ndarray | None = None  # (k,) float64
    epoch_inertia: float = 0.0
    epoch_frames: int = 0
    inertia: list[float] = dataclasses.field(default_factory=list)
    frames: int = 0  # frames of one epoch (known once the first epoch is done)
    sample_keys: np.ndarray | None = None  # this process's initial sample: random keys and frames
    sample: np.ndarray | None = None


_ARRAYS = ("centroids", "seen", "epoch_sums", "epoch_counts", "sample_keys", "sample")
_SCALARS = ("phase", "tick", "epoch", "step", "epoch_inertia", "epoch_frames", "inertia", "frames")


def _paths(folder: Path, index: int, count: int) -> tuple[Path, Path]:
    stem = f"process-{index}-of-{count}"
    return folder / f"{stem}.npz", folder / f"{stem}.prev.npz"


def save_state(folder: str | Path, state: FitState, *, index: int = 0, count: int = 1) -> None:
    """Write this process's state atomically; its previous file becomes the ``.prev`` one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    current, previous = _paths(folder, index, count)
    meta = {name: getattr(state, name) for name in _SCALARS} | {"settings": state.settings}
    arrays = {name: getattr(state, name) for name in _ARRAYS if getattr(state, name) is not None}
    descriptor, temporary = tempfile.mkstemp(prefix=f".{current.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, meta=np.str_(json.dumps(meta)), **arrays)
            file.flush()
            os.fsync(file.fileno())
        if current.exists():
            current.replace(previous)
        Path(temporary).replace(current)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load(path: Path) -> FitState | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {name: archive[name] for name in _ARRAYS if name in archive.files}
    except (OSError, ValueError, KeyError) as error:
        raise KMeansStateError(f"{path}: unreadable k-means state ({error}); delete it to start over") from error
    return FitState(settings=meta.pop("settings"), **meta, **arrays)


def restore_state(
    folder: str | Path, settings: dict[str, object], reduce: Reduce, *, index: int = 0, count: int = 1
) -> FitState | None:
    """The state all processes continue from, or None to start afresh (collective: every process calls it).

    :raises KMeansStateError: the saved fit had other settings, or the processes' files share no step.
    """
    folder = Path(folder)
    current, previous = _paths(folder, index, count)
    candidates = [state for state in (_load(current), _load(previous)) if state is not None]
    newest = candidates[0].tick if candidates else -1
    ticks = np.zeros(count, dtype=np.float64)
    ticks[index] = newest
    target = int(np.min(reduce({"ticks": ticks})["ticks"]))
    if target < 0:
        return None
    chosen = next((state for state in candidates if state.tick == target), None)
    if chosen is None:
        raise KMeansStateError(
            f"{folder}: the processes' saved states share no step (this one has {[s.tick for s in candidates]}, "
            f"another {target}); delete the folder to start over"
        )
    changed = sorted(key for key in settings if chosen.settings.get(key) != settings[key])
    if changed:
        details = ", ".join(f"{key}={chosen.settings.get(key)!r}, now {settings[key]!r}" for key in changed)
        raise KMeansStateError(f"{folder}: saved by a fit with other settings ({details}); delete it to start over")
    return chosen


def remove_state(folder: str | Path, *, index: int = 0, count: int = 1) -> None:
    """Delete this process's state files (once the result is written), and the folder when it is left empty."""
    folder = Path(folder)
    for path in _paths(folder, index, count):
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
