"""Write a manifest listing a dataset's audio files and their lengths.

Usage: ``python -m spidr_jax.data.write_manifest DATASET OUTPUT [--ext .wav] [--fairseq]``

DATASET is a directory, searched recursively for files ending in ``--ext``, or an uncompressed tar archive.
The output is a CSV ``fileid,path,num_samples`` with absolute paths (fileid: the file name without the
extension); for a tar, ``fileid,path,num_samples,archive,byte_offset,byte_size`` with the member names and
where their bytes lie in the archive. ``--fairseq`` writes a fairseq TSV instead (directories only): the
root directory, then ``relative_path<TAB>num_samples`` lines. Lengths come from the audio headers; rows are
sorted by path. On any error nothing is written.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spidr_jax.cli import command_parser
from spidr_jax.data.audio import audio_info
from spidr_jax.data.manifest import ARCHIVE_COLUMNS, BASE_COLUMNS, ManifestRow
from spidr_jax.data.scan import bounded_map
from spidr_jax.errors import UserError, exit_on_user_error
from spidr_jax.progress import track
from spidr_jax.storage.atomic import write_text

# Magic numbers of the compressions tarfile would otherwise decompress on the fly.
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class WriteManifestError(UserError, ValueError):
    """A dataset a manifest cannot be written for; the message names the offending file."""


def _lengths(rows: list[ManifestRow], description: str, *, progress: bool, num_threads: int) -> list[int]:
    """Header sample counts of the rows, read in a thread pool behind a progress bar."""
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        infos = bounded_map(audio_info, rows, pool, window=num_threads * 16)
        return [
            info.num_samples for info in track(infos, total=len(rows), description=description, disable=not progress)
        ]


def _strip_extension(name: str, ext: str) -> str:
    """The fileid: the last path component without the extension."""
    name = name.rsplit("/", 1)[-1]
    return name[: -len(ext)] if ext and name.endswith(ext) else name


def _directory_rows(dataset: Path, ext: str) -> list[ManifestRow]:
    paths = sorted(str(path) for path in dataset.rglob(f"*{ext}") if path.is_file())
    if not paths:
        raise WriteManifestError(f"{dataset}: no file ending in {ext!r}")
    return [ManifestRow(fileid=_strip_extension(Path(path).name, ext), path=path, num_samples=0) for path in paths]


def _compression(path: Path) -> str | None:
    with path.open("rb") as file:
        head = file.read(8)
    return next((name for magic, name in _COMPRESSED_MAGIC.items() if head.startswith(magic)), None)


def _tar_rows(archive: Path, ext: str) -> list[ManifestRow]:
    try:
        # "r:" refuses compressed archives instead of silently decompressing them.
        with tarfile.open(archive, mode="r:") as tar:
            members = [member for member in tar.getmembers() if member.isreg() and member.name.endswith(ext)]
    except tarfile.TarError as error:
        raise WriteManifestError(f"{archive}: not a readable uncompressed tar archive ({error})") from error
    if not members:
        raise WriteManifestError(f"{archive}: no member ending in {ext!r}")
    sparse = next((member.name for member in members if member.issparse()), None)
    if sparse is not None:
        raise WriteManifestError(f"{archive}: member {sparse} is sparse, so its bytes are not contiguous")
    members.sort(key=lambda member: member.name)
    return [
        ManifestRow(
            fileid=_strip_extension(member.name, ext),
            path=member.name,
            num_samples=0,
            archive=str(archive),
            byte_offset=member.offset_data,
            byte_size=member.size,
        )
        for member in members
    ]


def _render_csv(rows: list[ManifestRow], *, archive: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BASE_COLUMNS + ARCHIVE_COLUMNS if archive else BASE_COLUMNS)
    for row in rows:
        fields = [row.fileid, row.path, row.num_samples]
        writer.writerow([*fields, row.archive, row.byte_offset, row.byte_size] if archive else fields)
    return buffer.getvalue()


def _render_tsv(rows: list[ManifestRow], root: Path) -> str:
    lines = [str(root)]
    for row in rows:
        relative = os.path.relpath(row.path, root)
        if "\t" in relative or "\n" in relative:
            raise WriteManifestError(f"{row.path}: a fairseq manifest cannot hold a path with a tab or newline")
        lines.append(f"{relative}\t{row.num_samples}")
    return "\n".join(lines) + "\n"


def _write_atomically(output: Path, text: str) -> None:
    """Write through a temporary file in the same directory, renamed into place only once complete."""
    if not output.parent.is_dir():
        raise WriteManifestError(f"{output}: directory {output.parent} does not exist")
    if output.is_dir():
        raise WriteManifestError(f"{output}: is a directory")
    write_text(output, text)


def write_manifest(
    dataset: str | Path,
    output: str | Path,
    ext: str = ".wav",
    fairseq: bool = False,
    *,
    progress: bool = True,
    num_threads: int = 8,
) -> int:
    """Write the manifest of ``dataset`` (a directory or an uncompressed tar) to ``output``; the number of rows.

    Raises WriteManifestError for a dataset that is neither a directory nor an uncompressed tar, one without
    files ending in ``ext``, or an output whose suffix does not match the format (``.csv``, or ``.tsv`` with
    ``fairseq``: readers pick the format by suffix); AudioError for an unreadable audio file.
    """
    dataset, output = Path(dataset).resolve(), Path(output)
    expected_suffix = ".tsv" if fairseq else ".csv"
    if output.suffix != expected_suffix:
        kind = "fairseq" if fairseq else "CSV"
        raise WriteManifestError(f"{output}: a {kind} manifest must end in {expected_suffix}")
    if dataset.is_dir():
        rows = _directory_rows(dataset, ext)
    elif not dataset.is_file():
        raise WriteManifestError(f"{dataset}: no such directory or file")
    elif (compression := _compression(dataset)) is not None:
        raise WriteManifestError(f"{dataset}: {compression}-compressed; only uncompressed tar archives can be read")
    elif not tarfile.is_tarfile(dataset):
        raise WriteManifestError(f"{dataset}: neither a directory nor a tar archive")
    elif fairseq:
        raise WriteManifestError(f"{dataset}: fairseq manifests are for directories, not tar archives")
    else:
        rows = _tar_rows(dataset, ext)
    lengths = _lengths(rows, f"Reading {dataset.name}", progress=progress, num_threads=max(1, num_threads))
    rows = [
        ManifestRow(row.fileid, row.path, length, row.archive, row.byte_offset, row.byte_size)
        for row, length in zip(rows, lengths, strict=True)
    ]
    text = _render_tsv(rows, dataset) if fairseq else _render_csv(rows, archive=rows[0].in_archive)
    _write_atomically(output, text)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = command_parser(
        "manifest",
        "Write a manifest of a dataset's audio files: the reference's CSV (fileid,path,num_samples), the CSV of "
        "the members of an uncompressed tar archive, or a fairseq TSV.\n\n"
        "    python -m spidr_jax.manifest /data/LibriSpeech/train-960 train.csv --ext .flac",
    )
    parser.add_argument("dataset", type=Path, help="the dataset's directory, or an uncompressed tar archive")
    parser.add_argument("output", type=Path, help="the manifest to write (.csv, or .tsv with --fairseq)")
    parser.add_argument("--ext", default=".wav", help="the extension of the audio files")
    parser.add_argument("--fairseq", action="store_true", help="write a fairseq TSV manifest instead of a CSV")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        try:
            count = write_manifest(args.dataset, args.output, args.ext, args.fairseq, progress=sys.stderr.isatty())
        except OSError as error:  # the file the system names, and its reason
            raise WriteManifestError(f"{error.filename or args.dataset}: {error.strerror or error}") from None
    print(f"Wrote {count} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
