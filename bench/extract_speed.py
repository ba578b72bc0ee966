"""Feature extraction throughput (audio seconds per second) against the reference, same model and files.

    python bench/extract_speed.py            # base SpidR, 24 files of 1-8 s, layer 6, CPU
    python bench/extract_speed.py --files 40 --max-shapes 2 --runs 1 --json out.jsonl   # short, one JSON line
    python bench/extract_speed.py --files 40 --no-reference-process   # without the reference's whole-process timing

The reference extracts one file at a time (its paper/extract_features.py); spidr_jax batches files into a few
static padded shapes over all devices (`python -m spidr_jax.extract`). Random weights: speed does not depend on them.
Besides the throughputs, both sides are timed as a user times a command: a whole process that starts, loads the
model, reads every file and writes its features (`--reference-process` is the reference's; ours is the CLI, with an
empty compilation cache, then with the cache the first run filled).
"""

from __future__ import annotations

import argparse
import json
import os
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


def reference_process(checkpoint: Path, manifest: Path, layer: int, output: Path) -> None:
    """What a user's extraction script with the reference does: load the model, then per file read, run, save."""
    import soundfile
    import torch
    import torch.nn.functional as F
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    model = SpidR(SpidRConfig()).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    output.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for line in manifest.read_text().splitlines()[1:]:
            fileid, path, _ = line.split(",")
            wav = torch.from_numpy(soundfile.read(path, dtype="float32")[0]).to(device)[None]
            features = model.get_intermediate_outputs(F.layer_norm(wav, wav.shape))[layer - 1]
            np.save(output / f"{fileid}.npy", features[0].float().cpu().numpy())


def measure(
    files: int, layer: int, *, max_shapes: int = 8, runs: int = 2, reference_process_time: bool = True
) -> dict[str, object]:
    """Convert a random reference model, extract with both; throughputs of the last run of ours and the reference.

    The extraction CLI's throughput covers its whole loop, compilation included. Both runs share a persistent
    compilation cache in a temporary folder, so with two runs the second loads the programs the first compiled:
    the steady state.
    """
    import torch
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest, clips = make_corpus(root, files)
        torch.manual_seed(0)
        torch.save({"model": SpidR(SpidRConfig()).state_dict()}, root / "spidr.pt")
        convert = Path(__file__).resolve().parents[1] / "convert" / "torch_to_orbax.py"
        subprocess.run([sys.executable, str(convert), "--model", "spidr", str(root / "spidr.pt"), str(root / "jax")],
                       check=True, capture_output=True)  # fmt: skip
        env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": str(root / "jax-cache")}  # empty at first
        ours, walls = 0.0, {}
        for attempt in ("cold", "warm")[:runs]:
            out = root / f"features-{attempt}"
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(root / "jax"), "--manifest",
                 str(manifest), "--output", str(out), "--layer", str(layer), "--quiet",
                 "--max-shapes", str(max_shapes)],
                check=True, capture_output=True, text=True, env=env,
            )  # fmt: skip
            walls[attempt] = time.perf_counter() - start
            summary = result.stderr.strip().splitlines()[-1]
            ours = float(summary.split("(")[1].split(" audio")[0])
            print(f"spidr_jax ({attempt}): {summary} [process {walls[attempt]:.1f} s]", flush=True)
        reference = reference_throughput(root / "spidr.pt", clips, layer)
        reference_wall = None
        if reference_process_time:
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--reference-process", str(root / "spidr.pt"), str(manifest),
                            str(layer), str(root / "reference-features")], check=True)  # fmt: skip
            reference_wall = time.perf_counter() - start
            print(f"reference (a whole process): {reference_wall:.1f} s", flush=True)
    import jax

    last = walls[("cold", "warm")[runs - 1]]
    processes = (
        {
            "reference_process_s": reference_wall,
            "process_speedup_cold": reference_wall / walls["cold"],
            "process_speedup": reference_wall / last,
        }
        if reference_wall
        else {}
    )

    return {
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "files": files,
        "audio_s": sum(len(c) for c in clips) / 16_000,
        "layer": layer,
        "max_shapes": max_shapes,
        "runs": runs,
        "jax_audio_s_per_s": ours,
        "jax_process_s": last,
        "jax_process_cold_s": walls["cold"],
        "reference_audio_s_per_s": reference,
        "speedup": ours / reference,
    } | processes


def main() -> None:
    """Measure and print the ratio (and a JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--max-shapes", type=int, default=8, help="padded lengths for spidr_jax (compilations)")
    parser.add_argument("--runs", type=int, choices=[1, 2], default=2, help="runs of ours; the last one counts")
    parser.add_argument("--json", metavar="PATH", help="append the figures as one JSON line to PATH")
    parser.add_argument(
        "--no-reference-process", action="store_true", help="skip timing the reference as a whole process"
    )
    parser.add_argument(
        "--reference-process", nargs=4, metavar=("PT", "MANIFEST", "LAYER", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.reference_process:  # the reference's side of the whole-process timing, in its own process
        checkpoint, manifest, layer, output = args.reference_process
        reference_process(Path(checkpoint), Path(manifest), int(layer), Path(output))
        return
    result = measure(
        args.files,
        args.layer,
        max_shapes=args.max_shapes,
        runs=args.runs,
        reference_process_time=not args.no_reference_process,
    )
    if args.json:
        with Path(args.json).open("a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    ours, reference = result["jax_audio_s_per_s"], result["reference_audio_s_per_s"]
    line = (
        f"{platform.node()} {result['device']} | base SpidR layer {args.layer}, "
        f"{args.files} files: spidr_jax {ours:.1f} audio s/s (warm), reference {reference:.1f} audio s/s, "
        f"speed-up x{ours / reference:.2f}"
    )
    if "reference_process_s" in result:
        line += (
            f"; whole processes: reference {result['reference_process_s']:.1f} s, spidr_jax "
            f"{result['jax_process_cold_s']:.1f} s (empty cache) / {result['jax_process_s']:.1f} s "
            f"(x{result['process_speedup']:.2f})"
        )
    print(line)


if __name__ == "__main__":
    main()
