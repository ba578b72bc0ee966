"""Units as JSON lines, always complete: `units.jsonl`, or one shard per process merged into it at the end.

A single process appends to `units.jsonl`; with several, each appends to its shard `units-<k>-of-<n>.jsonl`,
which process 0 folds into `units.jsonl` at the end, then puts in the manifest's order. Only newline-terminated
lines count as written: a cut last line is removed before appending again, and a fileid recorded twice (two
extractions into one output, before the lock) is cut back to its first record. A failed write (disk full,
read-only directory) raises `WriteError` naming the path (`spidr_jax.storage.atomic`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from spidr_jax.storage.atomic import write_atomically, write_failure

UNITS_FILE = "units.jsonl"
SHARD_PATTERN = re.compile(r"units-\d{5}-of-\d{5}\.jsonl")


def shard_name(index: int, count: int) -> str:
    """The units file of process `index` of `count` (`units.jsonl` for a single process)."""
    return UNITS_FILE if count == 1 else f"units-{index:05d}-of-{count:05d}.jsonl"


def units_files(output: Path) -> list[Path]:
    """`units.jsonl` and every process shard present in `output`, in name order."""
    if not output.is_dir():
        return []
    shards = sorted(p for p in output.iterdir() if SHARD_PATTERN.fullmatch(p.name))
    main = output / UNITS_FILE
    return ([main] if main.exists() else []) + shards


def complete_records(path: Path) -> Iterator[tuple[dict, int]]:
    """(record, end offset) of each newline-terminated JSON line; stops at the first cut or invalid line."""
    end = 0
    with path.open("rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                return  # a write that was interrupted, even if what is there parses
            try:
                record = json.loads(line)
                record["fileid"]  # a record without a fileid is damage too
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                return
            end += len(line)
            yield record, end


def valid_length(path: Path) -> int:
    """Bytes of `path` up to the end of its last complete record."""
    end = 0
    for _, end in complete_records(path):  # noqa: B007 - only the last offset matters
        pass
    return end


def done_units(output: Path) -> set[str]:
    """Fileids with a complete units record in any units file of `output`."""
    return {record["fileid"] for path in units_files(output) for record, _ in complete_records(path)}


class UnitsWriter:
    """Appends one JSON line per file to this process's units file, truncating a cut last line first."""

    def __init__(self, output: Path, index: int = 0, count: int = 1, *, dedup: bool = False) -> None:
        self.path = output / shard_name(index, count)
        self.dedup = dedup
        self.done = done_units(output)
        try:
            if self.path.exists():
                self.good = valid_length(self.path)
                os.truncate(self.path, self.good)
            else:
                self.good = 0
            self.file = self.path.open("a", encoding="utf-8")  # created with the umask's permissions
        except OSError as error:
            raise write_failure(self.path, error) from error

    def is_done(self, fileid: str) -> bool:
        """Whether this file was written by an earlier run."""
        return fileid in self.done

    def write(self, fileid: str, values: np.ndarray) -> None:
        """Write one file's units (deduplicated, with their durations, if asked)."""
        if self.dedup:
            units, durations = deduplicate(values)
            self.write_record({"fileid": fileid, "units": units.tolist(), "durations": durations.tolist()})
        else:
            self.write_record({"fileid": fileid, "units": values.tolist()})

    def write_record(self, record: dict) -> None:
        """Append one JSON line."""
        self._guarded(lambda: self.file.write(json.dumps(record) + "\n"))

    def flush(self) -> None:
        """Make what was written durable."""

        def sync() -> None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.good = self.file.tell()

        self._guarded(sync)

    def _guarded(self, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as error:
            self._drop_partial()
            raise write_failure(self.path, error) from error

    def _drop_partial(self) -> None:
        """After a failed write, cut the file back to its last durable record (truncating needs no space)."""
        with contextlib.suppress(OSError):  # else the next run removes the cut line
            os.truncate(self.path, self.good)
        with contextlib.suppress(OSError):  # the buffer could not be written: the failure being reported
            self.file.close()

    def close(self) -> None:
        """Close the file."""
        if not self.file.closed:
            self._guarded(self.file.close)


def merge_shards(output: Path) -> int:
    """Append the records of every process shard missing from `units.jsonl`, then delete the shards.

    Safe to repeat after an interruption: records already in `units.jsonl` are not added twice. Returns how many
    records were added.
    """
    shards = [path for path in units_files(output) if path.name != UNITS_FILE]
    if not shards:
        return 0
    main = output / UNITS_FILE
    writer = UnitsWriter(output)  # truncates a cut line of units.jsonl and knows every fileid written anywhere
    present = {record["fileid"] for record, _ in complete_records(main)} if main.exists() else set()
    added = 0
    try:
        for shard in shards:
            for record, _ in complete_records(shard):
                if record["fileid"] not in present:
                    present.add(record["fileid"])
                    writer.write_record(record)
                    added += 1
        writer.flush()
    finally:
        writer.close()
    for shard in shards:
        shard.unlink(missing_ok=True)
    return added


def record_spans(path: Path) -> dict[str, tuple[int, int]]:
    """(start, end) byte offsets of the first complete record of each fileid in a units file."""
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for record, end in complete_records(path):
        spans.setdefault(record["fileid"], (start, end))
        start = end
    return spans


def rewrite_records(path: Path, spans: list[tuple[int, int]]) -> None:
    """Rewrite a units file (atomically) with the records at `spans`, in that order."""
    with path.open("rb") as source:

        def copy(target: IO[bytes]) -> None:
            for start, end in spans:
                source.seek(start)
                target.write(source.read(end - start))

        write_atomically(path, copy)


def deduplicate_units(output: Path) -> int:
    """Cut every units file of `output` back to the first record of each fileid; how many records were removed.

    Two extractions that once wrote into one output at the same time (before the lock) wrote every file twice.
    """
    removed = 0
    for path in units_files(output):
        records = sum(1 for _ in complete_records(path))
        spans = record_spans(path)
        if len(spans) < records:
            rewrite_records(path, sorted(spans.values()))
            removed += records - len(spans)
    return removed


def order_units(output: Path, fileids: list[str]) -> bool:
    """Put the records of `units.jsonl` in the order of `fileids` (the manifest's); whether it was rewritten.

    Records of other fileids (from an earlier manifest) follow, in their order.
    """
    path = output / UNITS_FILE
    if not path.exists():
        return False
    spans = record_spans(path)
    rank = {fileid: i for i, fileid in enumerate(fileids)}
    ordered = sorted(spans, key=lambda fileid: (rank.get(fileid, len(rank)), spans[fileid][0]))
    if ordered == list(spans):
        return False
    rewrite_records(path, [spans[fileid] for fileid in ordered])
    return True


def deduplicate(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(units without consecutive repeats, how many frames each lasted)."""
    units = np.asarray(units).reshape(-1)
    if units.size == 0:
        return units, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1]]))
    return units[starts], np.diff(np.concatenate([starts, [units.size]]))
