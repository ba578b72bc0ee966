"""The settings an output directory was extracted with (`OUT/extraction.json`), so runs with others never mix.

A rerun into a directory written with other settings (checkpoint, its step, layer, features or units, ...) is
refused, naming what differs; `--overwrite` deletes what an earlier extraction wrote there and starts afresh.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from spidr_jax.errors import UserError
from spidr_jax.extract.unit_formats import FORMAT_FILES
from spidr_jax.extract.units_file import SHARD_PATTERN, UNITS_FILE
from spidr_jax.storage.atomic import WriteError, make_directory, write_json

SETTINGS_FILE = "extraction.json"
TEMPORARY_PATTERN = re.compile(r"\..+\.(npy|pt|json|jsonl|km|txt)\.[A-Za-z0-9_]+\.tmp")  # by write_atomically
TOP_FILES = {SETTINGS_FILE, UNITS_FILE, *(name for names in FORMAT_FILES.values() for name in names)}
FORMAT = "spidr_jax.extraction/1"


class ExtractionError(UserError, ValueError):
    """Bad extraction request or unusable output; the message names the file or setting."""


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes what is written for a file."""

    checkpoint: str  # resolved path
    checkpoint_kind: str  # "converted model" or "training workdir"
    checkpoint_step: int
    model_type: str
    layer: int
    output: str  # "features" or "units"
    after_residual: bool
    normalize: bool
    dtype: str
    # Added after the first format: an extraction.json without them was written with these values.
    units_format: str = "jsonl"
    dedup: bool = False
    kmeans: str = ""  # units from this km.npz (its resolved path) rather than the codebook
    layout: str = "flat"
    feature_format: str = "npy"

    def describe_checkpoint(self) -> str:
        """E.g. `runs/x (training workdir, step 5000)`."""
        return f"{self.checkpoint} ({self.checkpoint_kind}, step {self.checkpoint_step})"


def read_settings(output: Path) -> dict | None:
    """The settings recorded in `output`, or None when there are none."""
    path = output / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExtractionError(f"{path}: unreadable ({error}); use --overwrite to start afresh") from error
    if not isinstance(data, dict):
        raise ExtractionError(f"{path}: not an extraction settings file; use --overwrite to start afresh")
    return data


def differences(recorded: dict, settings: ExtractionSettings) -> list[str]:
    """`name: X there, Y now` for every setting that differs (a setting not recorded had its default)."""
    now = asdict(settings)
    defaults = {field.name: field.default for field in fields(ExtractionSettings) if field.default is not MISSING}
    then = defaults | recorded
    return [
        f"{name}: {then.get(name)!r} there, {value!r} now" for name, value in now.items() if then.get(name) != value
    ]


def check_settings(output: Path, settings: ExtractionSettings) -> None:
    """Raise ExtractionError (one line naming what differs) if `output` was written with other settings."""
    recorded = read_settings(output)
    if recorded is None:
        return
    changed = differences(recorded, settings)
    if changed:
        raise ExtractionError(
            f"{output / SETTINGS_FILE}: {output} was extracted with other settings ({'; '.join(changed)}); "
            "use --overwrite to start afresh, or another --output"
        )


def earlier_outputs(output: Path, *, temporaries_only: bool = False) -> list[Path]:
    """What an extraction writes in `output`: settings, units files, features, temporary files (or only these)."""
    if not output.is_dir():
        return []
    found = []
    for root, _, names in os.walk(output):
        for name in names:
            relative = Path(root, name).relative_to(output)
            ours = bool(TEMPORARY_PATTERN.fullmatch(name))
            if not temporaries_only:
                top = len(relative.parts) == 1
                ours = ours or name.endswith((".npy", ".pt"))
                ours = ours or (top and (name in TOP_FILES or bool(SHARD_PATTERN.fullmatch(name))))
            if ours:
                found.append(output / relative)
    return found


def clear_outputs(output: Path) -> int:
    """Delete what an earlier extraction wrote in `output` (and the folders left empty); returns the file count."""
    removed = earlier_outputs(output)
    try:
        for path in removed:
            path.unlink(missing_ok=True)
        for root, dirs, _ in os.walk(output, topdown=False):
            for name in dirs:
                directory = Path(root, name)
                if not any(directory.iterdir()):
                    directory.rmdir()
    except OSError as error:
        raise WriteError(f"cannot clear {output}: {error.strerror or error}") from error
    return len(removed)


def check_output_location(output: Path) -> None:
    """Raise ExtractionError when `output` is, or would lie inside, something that is not a directory."""
    if output.exists() and not output.is_dir():
        raise ExtractionError(f"{output}: exists and is not a directory; choose another --output")
    existing = next((parent for parent in output.absolute().parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ExtractionError(f"{output}: {existing} is a file, not a directory; choose another --output")


def prepare_output(output: Path, settings: ExtractionSettings, *, overwrite: bool) -> int:
    """Create `output` and record `settings` there (refusing other recorded settings unless `overwrite`).

    Returns how many files of an earlier extraction `overwrite` deleted.
    """
    check_output_location(output)
    removed = clear_outputs(output) if overwrite else 0
    if not overwrite:
        check_settings(output, settings)
        # Left by a killed run (no process writes yet): they would only accumulate.
        try:
            for path in earlier_outputs(output, temporaries_only=True):
                path.unlink(missing_ok=True)
        except OSError as error:
            raise WriteError(f"cannot clear {output}: {error.strerror or error}") from error
    make_directory(output)
    path = output / SETTINGS_FILE
    record = asdict(settings) | {"format": FORMAT}
    if read_settings(output) != record:
        write_json(path, record)
    return removed
