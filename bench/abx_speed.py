"""Speed of ABX in JAX: the demo corpus's dev split end to end, and a LibriSpeech dev-clean sized synthetic task.

    python -m bench.abx_speed demo [--workdir DIR]
    python -m bench.abx_speed synthetic [--workdir DIR] [--items 100000] [--hours 5] [--dim 768]
        [--fastabx-python PYTHON]

``demo`` times ``python -m spidr_jax.evaluate abx`` on the dev split with a tiny random SpidR (the demo model's
shape): end to end from the checkpoint (model, features, both speaker conditions), then on the same features
written to disk (``--features``), which is the ABX alone.

``synthetic`` writes (once, into the workdir) an item file of triphone tokens over ``--hours`` of
``--dim``-dimensional 50 Hz features, one ``.npy`` per utterance, 40 speakers, 39 phones of Zipf-distributed
frequencies and gamma-distributed durations (mean 80 ms), each frame a phone prototype plus a speaker offset and
noise; then times ``python -m spidr_jax.evaluate abx --features`` within and across speaker (within context,
ZeroSpeech's subsampling), and fastabx on the same input with ``--fastabx-python``.

Each timing is a separate process, compilation included (an empty compilation cache), and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import REPO_ROOT

ROOT = REPO_ROOT
HEADER = "#file onset offset #phone prev-phone next-phone speaker"


def timed(command: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of a command that must succeed, compiling afresh (an empty compilation cache)."""
    with tempfile.TemporaryDirectory(prefix="abx_bench_cache_") as cache:
        env = os.environ | {"SPIDR_JAX_COMPILATION_CACHE": cache}
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def report(name: str, seconds: float, output: str, **extra: object) -> None:
    """One JSON line: the case, its time, and the scores the command printed."""
    scores = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    print(json.dumps({"case": name, "seconds": round(seconds, 2), **extra, "scores": scores}), flush=True)


def tiny_checkpoint(workdir: Path) -> Path:
    """A converted tiny SpidR with random weights (the demo model's shape), made once."""
    target = workdir / "model" / "orbax"
    if not target.exists():
        from tests.reference import tiny_orbax_checkpoint

        tiny_orbax_checkpoint(workdir / "model")
    return target


def demo(workdir: Path) -> None:
    """The demo dev split: from the checkpoint, then from features on disk."""
    from spidr_jax import demo as corpus

    checkpoint, manifest, item = tiny_checkpoint(workdir), corpus.manifest_path("dev"), corpus.item_path("dev")
    evaluate = [sys.executable, "-m", "spidr_jax.evaluate", "abx", "--item", str(item), "--json", "--speaker", "both"]
    model = ["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--layer", "3"]
    seconds, output = timed([*evaluate, *model])
    report("demo dev, from the checkpoint (layer 3 features)", seconds, output)
    seconds, output = timed([*evaluate, *model, "--units"])
    report("demo dev, from the checkpoint (layer 3 units)", seconds, output)
    features = workdir / "demo_features"
    if not features.exists():
        timed([sys.executable, "-m", "spidr_jax.extract", "--checkpoint", str(checkpoint), "--manifest",
               str(manifest), "--output", str(features), "--layer", "3", "--quiet"])  # fmt: skip
    for context in ("within", "any"):
        seconds, output = timed([*evaluate, "--features", str(features), "--context", context])
        report(f"demo dev, features on disk, {context} context", seconds, output)


def write_synthetic(folder: Path, items: int, hours: float, dim: int, seed: int = 0) -> Path:
    """Features (one .npy per utterance) and a triphone item file; returns the item file."""
    item = folder / "synthetic.item"
    if item.exists():
        return item
    rng = np.random.default_rng(seed)
    phones, speakers, files = 39, 40, max(1, round(2700 * hours / 5.4))
    frequency = 1.0 / np.arange(1, phones + 1) ** 0.9
    frequency /= frequency.sum()
    prototypes = rng.normal(size=(phones, dim)).astype(np.float32)
    offsets = 0.5 * rng.normal(size=(speakers, dim)).astype(np.float32)
    frames_per_file = rng.multinomial(int(hours * 3600 * 50), np.full(files, 1 / files))
    candidates = []  # (file, first frame, end frame, phone, previous, next, speaker) of every triphone
    features = folder / "features"
    features.mkdir(parents=True, exist_ok=True)
    for file, count in enumerate(frames_per_file.tolist()):
        durations = np.maximum(2, rng.gamma(4.0, 1.0, size=count // 2 + 2).astype(np.int64))
        bounds = np.concatenate([[0], np.cumsum(durations)])
        bounds = bounds[: np.searchsorted(bounds, count) + 1]
        sequence = rng.choice(phones, size=len(bounds) - 1, p=frequency)
        labels = np.repeat(sequence, np.diff(bounds))[:count]
        speaker = file % speakers
        noise = rng.standard_normal((count, dim), dtype=np.float32)
        np.save(features / f"f{file:05d}.npy", prototypes[labels] + offsets[speaker] + noise)
        candidates.extend(
            (file, bounds[j - 1], bounds[j + 2], *sequence[[j, j - 1, j + 1]], speaker)
            for j in range(1, len(sequence) - 1)
            if bounds[j + 2] <= count
        )
    chosen = np.sort(rng.choice(len(candidates), size=min(items, len(candidates)), replace=False))
    lines = [HEADER]
    for index in chosen.tolist():
        file, first, end, phone, previous, following, speaker = candidates[index]
        lines.append(f"f{file:05d} {first * 0.02:.2f} {end * 0.02:.2f} P{phone} P{previous} P{following} S{speaker}")
    temporary = item.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.rename(item)
    return item


def synthetic(workdir: Path, items: int, hours: float, dim: int, fastabx_python: str | None) -> None:
    """The synthetic task with the JAX backend, and with fastabx where given."""
    folder = workdir / f"synthetic_{items}_{hours}h_{dim}"
    start = time.perf_counter()
    item = write_synthetic(folder, items, hours, dim)
    print(json.dumps({"case": "synthetic data ready", "seconds": round(time.perf_counter() - start, 1),
                      "folder": str(folder)}), flush=True)  # fmt: skip
    features = folder / "features"
    for speaker in ("within", "across"):
        command = [sys.executable, "-m", "spidr_jax.evaluate", "abx", "--features", str(features), "--item",
                   str(item), "--speaker", speaker, "--json"]  # fmt: skip
        seconds, output = timed(command)
        report(f"synthetic, jax, {speaker} speaker", seconds, output, items=items, hours=hours, dim=dim)
        if fastabx_python:
            seconds, output = timed([fastabx_python, str(ROOT / "bench" / "abx_fastabx.py"), "--features",
                                     str(features), "--item", str(item), "--speaker", speaker])  # fmt: skip
            report(f"synthetic, fastabx, {speaker} speaker", seconds, output, items=items, hours=hours, dim=dim)


def main() -> None:
    """Run one benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench.abx_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["demo", "synthetic"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "spidr_jax_abx_bench")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=5.0)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--fastabx-python", help="a Python with fastabx, to time it on the synthetic task too")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.case == "demo":
        demo(args.workdir)
    else:
        synthetic(args.workdir, args.items, args.hours, args.dim, args.fastabx_python)


if __name__ == "__main__":
    main()
