"""Reading manifests: the list of utterances (path and length) a dataset is made of.

Four formats are understood, chosen by the file's suffix:

- ``.csv`` with header ``fileid,path,num_samples``: one audio file per row.
- ``.csv`` with header ``fileid,path,num_samples,archive,byte_offset,byte_size``: members of uncompressed
  tar archives, ``path`` being the member name and ``byte_offset``/``byte_size`` locating its bytes in the tar.
- ``.tsv`` in the fairseq layout: the first line is the dataset's root directory, then one
  ``relative_path<TAB>num_samples`` line per file. The relative path is the fileid.
- ``.jsonl``: one JSON object per line with the same fields as the CSV formats.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spidr_jax.errors import UserError

BASE_COLUMNS = ("fileid", "path", "num_samples")
ARCHIVE_COLUMNS = ("archive", "byte_offset", "byte_size")


@dataclass(frozen=True)
class ManifestRow:
    """One utterance: a standalone audio file, or a member of an uncompressed tar archive.

    ``num_samples`` is the length written in the manifest; batching relies on it without opening the audio.
    """

    fileid: str
    path: str
    num_samples: int
    archive: str | None = None
    byte_offset: int | None = None
    byte_size: int | None = None

    @property
    def in_archive(self) -> bool:
        """Whether the audio bytes live inside a tar archive rather than in their own file."""
        return self.archive is not None

    @property
    def location(self) -> str:
        """A human-readable place for error messages: the file, or the member and its archive."""
        return f"{self.path} (in {self.archive})" if self.archive is not None else self.path


class ManifestError(UserError, ValueError):
    """A manifest that cannot be read; the message names the file, and the line where one applies."""

    def __init__(self, manifest: str | Path, message: str, line: int | None = None) -> None:
        where = f"{manifest}, line {line}" if line is not None else str(manifest)
        super().__init__(f"{where}: {message}")
        self.manifest = str(manifest)
        self.line = line


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """All rows of a ``.csv``, ``.tsv`` (fairseq) or ``.jsonl`` manifest, in file order.

    Raises ManifestError for an unknown suffix, a missing or unreadable file, missing columns,
    non-integer lengths, a TSV whose root directory does not exist, or a manifest without rows.
    """
    path = Path(path)
    readers = {".csv": _read_csv, ".tsv": _read_tsv, ".jsonl": _read_jsonl}
    if path.suffix not in readers:
        raise ManifestError(path, f"unknown manifest format {path.suffix!r}; expected .csv, .tsv or .jsonl")
    try:
        rows = readers[path.suffix](path)
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(path, f"cannot read: {error}") from error
    if not rows:
        raise ManifestError(path, "no rows")
    return rows


def _parse_int(manifest: Path, line: int, column: str, value: Any) -> int:  # noqa: ANN401 - CSV text or JSON value
    """A non-negative integer field; JSON booleans and floats are refused, as are blank cells."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise ManifestError(manifest, f"{column} must be an integer, got {value!r}", line)
    try:
        number = int(value)
    except ValueError:
        raise ManifestError(manifest, f"{column} must be an integer, got {value!r}", line) from None
    if number < 0:
        raise ManifestError(manifest, f"{column} must be non-negative, got {number}", line)
    return number


def _parse_text(manifest: Path, line: int, column: str, value: Any) -> str:  # noqa: ANN401 - CSV text or JSON value
    """A non-empty string field."""
    if not isinstance(value, str) or not value:
        raise ManifestError(manifest, f"{column} must be a non-empty string, got {value!r}", line)
    return value


def _make_row(manifest: Path, line: int, record: dict[str, Any], *, archive: bool) -> ManifestRow:
    """A row from a CSV record or JSON object whose keys were already checked."""
    fileid = record["fileid"]
    if not isinstance(fileid, str):
        raise ManifestError(manifest, f"fileid must be a string, got {fileid!r}", line)
    row = ManifestRow(
        fileid=fileid,
        path=_parse_text(manifest, line, "path", record["path"]),
        num_samples=_parse_int(manifest, line, "num_samples", record["num_samples"]),
    )
    if not archive:
        return row
    return ManifestRow(
        fileid=row.fileid,
        path=row.path,
        num_samples=row.num_samples,
        archive=_parse_text(manifest, line, "archive", record["archive"]),
        byte_offset=_parse_int(manifest, line, "byte_offset", record["byte_offset"]),
        byte_size=_parse_int(manifest, line, "byte_size", record["byte_size"]),
    )


def _archive_columns(manifest: Path, line: int, keys: set[str]) -> bool:
    """Whether the archive columns are present, refusing records with only some of them."""
    present = [column for column in ARCHIVE_COLUMNS if column in keys]
    if present and len(present) != len(ARCHIVE_COLUMNS):
        missing = [column for column in ARCHIVE_COLUMNS if column not in keys]
        raise ManifestError(manifest, f"archive columns are incomplete: missing {', '.join(missing)}", line)
    return bool(present)


def _read_csv(manifest: Path) -> list[ManifestRow]:
    # utf-8-sig drops a byte-order mark written by spreadsheet tools; newline="" lets csv handle quoted newlines.
    with manifest.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        header = reader.fieldnames
        if header is None:
            raise ManifestError(manifest, "empty file; expected a header line", 1)
        missing = [column for column in BASE_COLUMNS if column not in header]
        if missing:
            raise ManifestError(manifest, f"header lacks column(s) {', '.join(missing)}; got {','.join(header)}", 1)
        archive = _archive_columns(manifest, 1, set(header))
        rows = []
        for record in reader:
            if None in record or any(value is None for value in record.values()):
                raise ManifestError(manifest, f"expected {len(header)} fields", reader.line_num)
            rows.append(_make_row(manifest, reader.line_num, record, archive=archive))
    return rows


def _read_tsv(manifest: Path) -> list[ManifestRow]:
    with manifest.open(encoding="utf-8") as file:
        lines = file.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(manifest, "first line must be the dataset's root directory", 1)
    root = Path(lines[0].strip())
    if not root.is_dir():
        raise ManifestError(manifest, f"root directory {root} does not exist", 1)
    rows = []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            raise ManifestError(manifest, f"expected relative_path<TAB>num_samples, got {text!r}", number)
        relative = _parse_text(manifest, number, "path", fields[0])
        num_samples = _parse_int(manifest, number, "num_samples", fields[1].strip())
        # Joined as text, not with Path, so the path is exactly root + separator + the fileid.
        rows.append(ManifestRow(fileid=relative, path=f"{root}{os.sep}{relative}", num_samples=num_samples))
    return rows


def _read_jsonl(manifest: Path) -> list[ManifestRow]:
    rows = []
    with manifest.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise ManifestError(manifest, f"invalid JSON: {error.msg}", number) from None
            if not isinstance(record, dict):
                raise ManifestError(manifest, f"expected a JSON object, got {type(record).__name__}", number)
            missing = [column for column in BASE_COLUMNS if column not in record]
            if missing:
                raise ManifestError(manifest, f"missing field(s) {', '.join(missing)}", number)
            archive = _archive_columns(manifest, number, set(record))
            rows.append(_make_row(manifest, number, record, archive=archive))
    return rows
