"""Opt-in download of the released checkpoints, converted on arrival. Nothing else in the package downloads.

    python -m spidr_jax.download spidr_base converted/spidr_base
    python -m spidr_jax.download dinosr_base_original converted/dinosr_original

Needs the `torch` extra for the conversion. `--url` points at another copy (a mirror, or file:// for a local file).
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from spidr_jax.cli import command_parser
from spidr_jax.convert.conversion import torch_to_orbax
from spidr_jax.errors import UserError, exit_on_user_error
from spidr_jax.progress import make_progress

# name -> (URL, converter --model)
RELEASES = {
    "spidr_base": ("https://dl.fbaipublicfiles.com/shared/devai/assets/models/spidr_base.pt", "spidr"),
    "dinosr_base_reproduced": (
        "https://dl.fbaipublicfiles.com/shared/devai/assets/models/dinosr_base_reproduced.pt",
        "dinosr",
    ),
    "dinosr_base_original": ("https://data.csail.mit.edu/placesaudio/dinosr/dinosr.ckpt", "dinosr_fairseq"),
}


class DownloadError(UserError, OSError):
    """A download failed; the message names the URL."""


def download(url: str, destination: Path, *, progress: bool = True) -> Path:
    """Fetch `url` to `destination` (written to a temporary name first, renamed when complete)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    try:
        with urllib.request.urlopen(url) as response, Path(tmp).open("wb") as out:  # noqa: S310 (user-chosen URL)
            total = int(response.headers.get("Content-Length") or 0) or None
            with make_progress(disable=not progress) as bar:
                task = bar.add_task(f"downloading {destination.name}", total=total, status="")
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
        Path(tmp).replace(destination)
    except (urllib.error.URLError, OSError) as error:
        Path(tmp).unlink(missing_ok=True)
        raise DownloadError(f"{url}: download failed ({error})") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return destination


def fetch_pretrained(name: str, output_dir: str | Path, *, url: str | None = None, progress: bool = True) -> Path:
    """Download a released checkpoint and convert it into `output_dir` (the download is not kept)."""
    if name not in RELEASES:
        raise DownloadError(f"unknown release {name!r}; choose one of {', '.join(RELEASES)}")
    default_url, model = RELEASES[name]
    with tempfile.TemporaryDirectory(prefix="spidr_jax_download_") as tmp:
        checkpoint = download(url or default_url, Path(tmp) / f"{name}.pt", progress=progress)
        return torch_to_orbax(checkpoint, output_dir, model)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, download and convert."""
    parser = command_parser("download", __doc__)
    parser.add_argument("name", choices=sorted(RELEASES), help="which released checkpoint")
    parser.add_argument("output_dir", help="converted model directory to create")
    parser.add_argument("--url", help="download from here instead (https://, or file:// for a local copy)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        out = fetch_pretrained(args.name, args.output_dir, url=args.url, progress=not args.quiet)
    print(f"wrote {out}", file=sys.stderr)


__all__ = ["RELEASES", "download", "fetch_pretrained"]

if __name__ == "__main__":
    main()
