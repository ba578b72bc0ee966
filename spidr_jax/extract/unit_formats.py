"""Units in the layouts the next tools read, written from `units.jsonl` once an extraction ends.

`units.jsonl` (a line `{"fileid", "units"[, "durations"]}` per file, in the manifest's order) is what every
extraction writes, and what a resumed run reads back. `--units-format` adds, in the manifest's order:

- `km` (fairseq HuBERT labels): `units.km`, one line of space-separated units per file, and `dict.km.txt`
  (`i 1` for every unit of the codebook or k-means).
- `gslm` (fairseq's `quantize_with_kmeans`, textlesslib): `units.txt`, a line `fileid|u u u ...` per file; with
  `--dedup` also `durations.txt`, `fileid|d d d ...`.
- `slamkit` (TWIST-style speech LMs): `units.slamkit.jsonl`, `{"file_name": audio path, "units": [...],
  "duration": [...]}` per file, always deduplicated.

`--dedup` collapses runs of a repeated unit into one and records how many frames (20 ms each) each lasted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from spidr_jax.extract.units_file import UNITS_FILE, complete_records, deduplicate
from spidr_jax.storage.atomic import write_text

UNIT_FORMATS = ("jsonl", "km", "gslm", "slamkit")
FORMAT_FILES = {
    "jsonl": (UNITS_FILE,),
    "km": ("units.km", "dict.km.txt"),
    "gslm": ("units.txt", "durations.txt"),
    "slamkit": ("units.slamkit.jsonl",),
}


def _records(output: Path) -> Iterator[dict]:
    path = output / UNITS_FILE
    if path.exists():
        for record, _ in complete_records(path):
            yield record


def _spaced(values: Sequence[int]) -> str:
    return " ".join(map(str, values))


def render(output: Path, unit_format: str, *, num_units: int, paths: dict[str, str]) -> list[Path]:
    """Write `unit_format`'s files from `units.jsonl` (already in the manifest's order); the files written.

    `paths` maps each fileid to its audio's location (SlamKit names files by it).
    """
    if unit_format == "jsonl":
        return []
    records = list(_records(output))
    written: list[Path] = []

    def write(name: str, lines: list[str]) -> None:
        write_text(output / name, "".join(line + "\n" for line in lines))
        written.append(output / name)

    if unit_format == "km":
        write("units.km", [_spaced(record["units"]) for record in records])
        write("dict.km.txt", [f"{unit} 1" for unit in range(num_units)])
    elif unit_format == "gslm":
        write("units.txt", [f"{record['fileid']}|{_spaced(record['units'])}" for record in records])
        if records and "durations" in records[0]:
            write("durations.txt", [f"{record['fileid']}|{_spaced(record['durations'])}" for record in records])
    elif unit_format == "slamkit":
        lines = []
        for record in records:
            units, durations = record["units"], record.get("durations")
            if durations is None:  # slamkit's units are always deduplicated
                values, lengths = deduplicate(np.asarray(units))
                units, durations = values.tolist(), lengths.tolist()
            lines.append(json.dumps({"file_name": paths.get(record["fileid"], record["fileid"]), "units": units,
                                     "duration": durations}))  # fmt: skip
        write("units.slamkit.jsonl", lines)
    return written
