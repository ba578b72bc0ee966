"""Feature extraction throughput (audio seconds per second) against the reference, same model and files.

    python bench/extract_speed.py            # base SpidR, 24 files of 1-8 s, layer 6, CPU

The reference extracts one file at a time (its paper/extract_features.py); spidr_jax batches files into a few
static padded shapes over all devices (`python -m spidr_jax.extract`). Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_corpus(directory: Path, count: int, seed: int = 0) -> tuple[Path, list[np.ndarray]]:
    """`count` noise files of 1-8 s and their CSV manifest."""
    rng = np.random.default_rng(seed)
    rows, clips = ["fileid,path,num_samples"], []
    for i in range(count):
        clip = (0.1 * rng.standard_normal(int(rng.uniform(1, 8) * 16_000))).astype(np.float32)
        path = directory / f"utt{i}.wav"
        sf.write(path, clip, 16_000, subtype="PCM_16")
        rows.append(f"utt{i},{path},{len(clip)}")
        clips.append(sf.read(path, dtype="float32")[0])
    manifest = directory / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, clips


def reference_throughput(checkpoint: Path, clips: list[np.ndarray], layer: int) -> float:
    """Audio seconds per second of the reference, one file at a time (after one warm-up file)."""
    import torch
    import torch.nn.functional as F
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    model = SpidR(SpidRConfig()).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    with torch.inference_mode():
        model.get_intermediate_outputs(torch.zeros(1, 16_000, device=device))
        start = time.perf_counter()
        for clip in clips:
            wav = torch.from_numpy(clip).to(device)[None]
            wav = F.layer_norm(wav, wav.shape)
            model.get_intermediate_outputs(wav)[layer - 1].cpu()
        elapsed = time.perf_counter() - start
    return sum(len(c) for c in clips) / 16_000 / elapsed


def main() -> None:
    """Convert a random reference model, extract with both, print the ratio."""
    import torch
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--layer", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest, clips = make_corpus(root, args.files)
        torch.manual_seed(0)
        torch.save({"model": SpidR(SpidRConfig()).state_dict()}, root / "spidr.pt")
        convert = Path(__file__).resolve().parents[1] / "convert" / "torch_to_orbax.py"
        subprocess.run([sys.executable, str(convert), "--model", "spidr", str(root / "spidr.pt"), str(root / "jax")],
                       check=True, capture_output=True)  # fmt: skip
        # Run twice: the first run compiles (and fills the persistent cache), the second is the steady state.
        for attempt in ("cold", "warm"):
            out = root / f"features-{attempt}"
            result = subprocess.run(
                [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(root / "jax"), "--manifest",
                 str(manifest), "--output", str(out), "--layer", str(args.layer), "--quiet"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            summary = result.stderr.strip().splitlines()[-1]
            ours = float(summary.split("(")[1].split(" audio")[0])
            print(f"spidr_jax ({attempt}): {summary}")
        reference = reference_throughput(root / "spidr.pt", clips, args.layer)
    import jax

    print(
        f"{platform.node()} {jax.devices()[0].device_kind} x{jax.device_count()} | base SpidR layer {args.layer}, "
        f"{args.files} files: spidr_jax {ours:.1f} audio s/s (warm), reference {reference:.1f} audio s/s, "
        f"speed-up x{ours / reference:.2f}"
    )


if __name__ == "__main__":
    main()
